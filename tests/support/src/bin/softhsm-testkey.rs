//! Test helper: makes and inspects keys on a SoftHSM token the way an HSM's own tools
//! would, including keys canopy refuses (extractable ones), and shows a key's attributes.
//! Usage: softhsm-testkey MODULE make-extractable TOKEN LABEL
//!        softhsm-testkey MODULE attrs TOKEN LABEL
//! The PIN comes from TESTKEY_PIN (a test token's PIN, not a secret).

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, module, action, token, label] = args.as_slice() else {
        eprintln!("usage: softhsm-testkey MODULE make-extractable|attrs TOKEN LABEL");
        std::process::exit(2);
    };
    let ctx = Pkcs11::new(module).expect("load module");
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("initialize");
    let slot = ctx
        .get_slots_with_initialized_token()
        .expect("slots")
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .is_ok_and(|i| i.label().trim() == token)
        })
        .expect("token");
    let session = ctx.open_rw_session(slot).expect("session");
    let pin = AuthPin::from(std::env::var("TESTKEY_PIN").expect("TESTKEY_PIN").as_str());
    session.login(UserType::User, Some(&pin)).expect("login");
    let label_attr = Attribute::Label(label.as_bytes().to_vec());
    match action.as_str() {
        "make-extractable" => {
            let id = Attribute::Id(label.as_bytes().to_vec());
            let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
            let public = [
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::EcParams(p256),
                id.clone(),
                label_attr.clone(),
            ];
            let private = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sign(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                id,
                label_attr,
            ];
            session
                .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
                .expect("generate");
            println!("made");
        }
        "attrs" => {
            let found = session
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), label_attr])
                .expect("find");
            for key in found {
                let attrs = session
                    .get_attributes(
                        key,
                        &[
                            AttributeType::Extractable,
                            AttributeType::Sensitive,
                            AttributeType::NeverExtractable,
                        ],
                    )
                    .expect("attributes");
                let mut line = Vec::new();
                for a in attrs {
                    match a {
                        Attribute::Extractable(b) => line.push(format!("extractable={b}")),
                        Attribute::Sensitive(b) => line.push(format!("sensitive={b}")),
                        Attribute::NeverExtractable(b) => {
                            line.push(format!("never_extractable={b}"))
                        }
                        _ => {}
                    }
                }
                println!("{}", line.join(" "));
            }
        }
        other => panic!("unknown action {other}"),
    }
    session.logout().ok();
}
