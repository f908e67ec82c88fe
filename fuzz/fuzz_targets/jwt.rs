#![no_main]
//! Kubernetes service-account JWT verification (`Authenticator::authenticate`) against a
//! cluster with a fixed ES256 JWKS. Half the inputs are raw `Authorization` values; the
//! other half are a fuzzed header and claims set *signed with the cluster's key*, so the
//! fuzzer reaches claim parsing (audience, expiry, kubernetes.io, sub) behind the
//! signature check.
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use canopy_issuer::auth::Authenticator;
use canopy_issuer::config::{ClusterConfig, Jwks, JwtConfig};
use canopy_issuer::kube_client::KubeAccess;
use canopy_issuer::store::Store;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    auth: Authenticator,
    key: EncodingKey,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let pair = rcgen::KeyPair::generate().expect("key");
        let raw = pair.public_key_raw(); // 0x04 || X || Y
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
        }]});
        let cluster = ClusterConfig {
            name: "eks-fuzz".parse().expect("cluster name"),
            intermediate: "aws".into(),
            access: KubeAccess::Inferred,
            jwt: Some(JwtConfig {
                audiences: vec!["canopy-issuer".into()],
                issuer: "https://kubernetes.default.svc".into(),
                max_token_lifetime: canopy::ttl::Ttl::hours(24),
                jwks: Jwks::Inline(jwks),
            }),
            cert_manager: None,
            pod_certificates: None,
            istio: None,
        };
        let store = runtime
            .block_on(async {
                // A file of this process's own (the store refuses in-memory SQLite),
                // emptied each start: the target only reads tokens from it.
                let path = std::env::temp_dir().join(format!(
                    "canopy-fuzz-jwt-{}.db",
                    std::process::id()
                ));
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                let s = Store::connect(&format!("sqlite:{}", path.display()), 1).await?;
                s.migrate().await?;
                Ok::<_, canopy_issuer::store::StoreError>(s)
            })
            .expect("store");
        let td = "mesh.example".parse().expect("trust domain");
        let auth = Authenticator::new(store, td, &[cluster], Vec::new()).expect("authenticator");
        Fixture {
            runtime,
            auth,
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let header = if mode & 1 == 0 {
        match std::str::from_utf8(rest) {
            // Bearer tokens (cnpy_…) go to the database; that path is not a parser.
            Ok(s) if !s.contains("cnpy_") => s.to_string(),
            _ => return,
        }
    } else {
        // rest = JOSE header JSON \0 claims JSON
        let mut parts = rest.splitn(2, |b| *b == 0);
        let jose = parts.next().unwrap_or_default();
        let claims = parts.next().unwrap_or_default();
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(jose),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let Ok(signature) =
            jsonwebtoken::crypto::sign(message.as_bytes(), &f.key, Algorithm::ES256)
        else {
            return;
        };
        format!("Bearer {message}.{signature}")
    };
    let _ = f.runtime.block_on(f.auth.authenticate(Some(&header), None));
});
