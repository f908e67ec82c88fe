//! The command line: every command, its flags and its help text.

use std::path::PathBuf;

use canopy::crl::RevocationReason;
use canopy::{KeyType, Serial, TrustDomain, Ttl};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;

const LAYOUT: &str = "\
Root directory layout (created with mode 0700):
  root-cert.pem                   the self-signed root certificate
  root-key.pem                    the root key, encrypted (PKCS#8, PBKDF2-SHA256 + AES-256-CBC), mode 0600
  ledger.jsonl                    one hash-chained JSON line per certificate, revocation and CRL the root made
  intermediates/NAME/cert.pem     an intermediate the root signed
  intermediates/NAME/chain.pem    that intermediate, then the root
  intermediates/NAME/key.pem      its key (new-intermediate without --out only; encrypted unless
                                  --unencrypted-key-insecure), mode 0600
  intermediates/NAME/retired-SERIAL/  the previous files after a renewal (--replace)
  crl.pem                         the latest root-signed CRL (pkictl crl); revocations live in the ledger

With --pkcs11 the root key is made on a PKCS#11 token instead (CKA_EXTRACTABLE false,
CKA_SENSITIVE true) and never leaves it: root-key.pkcs11.json (no secret: module, token
serial and label, key id and label) replaces root-key.pem, the ledger's first entry records
the token serial and key id, and every command that signs with the root opens the token,
asking its PIN (--pin-file FILE, or a prompt on a terminal). A new intermediate's key goes
on a token the same way (new-intermediate --pkcs11: intermediates/NAME/key.pkcs11.json).

The directory is built in a temporary folder next to DIR, synced, then renamed into place:
a crash leaves either nothing or a whole root. An existing root is never overwritten.
The passphrase comes from --passphrase-file or, on a terminal, a prompt (asked twice);
it is never an argument or an environment variable. No network connection is made.";

/// canopy's offline root CA.
#[derive(Debug, Parser)]
#[command(
    name = "pkictl",
    version,
    about = "canopy's offline root CA: root, intermediates, Istio cacerts, inspect, verify, ledger, CRL, rotation",
    after_help = "Exit codes: 0 ok, 1 user error (bad input, wrong passphrase, refusal), 2 internal error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// pkictl's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new root: key (encrypted), self-signed certificate and ledger.
    #[command(after_long_help = LAYOUT, after_help = LAYOUT)]
    InitRoot(InitRootArgs),
    /// Sign an intermediate CSR made where the key will live (Intermediate profile).
    SignIntermediate(SignIntermediateArgs),
    /// Make an intermediate key and certificate in one go.
    NewIntermediate(NewIntermediateArgs),
    /// Write an Istio `cacerts` (files and Secret manifest) publishing an intermediate, validated first.
    Cacerts(CacertsArgs),
    /// Show certificates, chains, CSRs, keys' public halves and CRLs.
    Inspect(InspectArgs),
    /// Verify a certificate up to a trusted root.
    Verify(VerifyArgs),
    /// List the root's ledger; --verify checks its hash chain and the files under the root.
    Ledger(LedgerArgs),
    /// Record the revocation of a certificate the root signed (publish it with `pkictl crl`).
    Revoke(RevokeArgs),
    /// Sign a CRL of every revoked certificate in the ledger.
    Crl(CrlArgs),
    /// Certify another root's key with this root (root rotation; run both ways).
    CrossSign(CrossSignArgs),
    /// Bundle several roots: PEM, or a SPIFFE trust bundle (JSON).
    Bundle(BundleArgs),
}

/// `--output`.
#[derive(Debug, Args, Clone, Copy)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// Root key types offered by init-root.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RootKeyType {
    /// ECDSA P-256 with SHA-256.
    EcdsaP256,
    /// ECDSA P-384 with SHA-384.
    EcdsaP384,
    /// RSA 4096 with SHA-256.
    Rsa4096,
}

impl From<RootKeyType> for KeyType {
    fn from(k: RootKeyType) -> Self {
        match k {
            RootKeyType::EcdsaP256 => KeyType::EcdsaP256,
            RootKeyType::EcdsaP384 => KeyType::EcdsaP384,
            RootKeyType::Rsa4096 => KeyType::RSA4096,
        }
    }
}

/// Flags that put a new key on a PKCS#11 token (or use one already there).
#[derive(Debug, Args, Clone, Default)]
pub struct Pkcs11Args {
    /// Make the key on a PKCS#11 token (HSM, smart card, SoftHSM) instead of a key file.
    #[arg(long)]
    pub pkcs11: bool,
    /// The token's PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, value_name = "PATH", requires = "pkcs11")]
    pub pkcs11_module: Option<PathBuf>,
    /// The token, by its label.
    #[arg(
        long,
        value_name = "LABEL",
        requires = "pkcs11",
        conflicts_with = "pkcs11_slot"
    )]
    pub pkcs11_token: Option<String>,
    /// The token, by slot id.
    #[arg(long, value_name = "ID", requires = "pkcs11")]
    pub pkcs11_slot: Option<u64>,
    /// Label of the key on the token (default: canopy-root, canopy-intermediate-NAME).
    #[arg(long, value_name = "LABEL", requires = "pkcs11")]
    pub pkcs11_key_label: Option<String>,
    /// Use a key already on the token (made with the HSM's own tools) instead of making one.
    #[arg(long, requires = "pkcs11")]
    pub pkcs11_existing_key: bool,
    /// With --pkcs11-existing-key: the key's CKA_ID in hex (instead of its label).
    #[arg(long, value_name = "HEX", requires = "pkcs11_existing_key")]
    pub pkcs11_key_id: Option<String>,
    /// Accept an existing key the token lets out (CKA_EXTRACTABLE true or CKA_SENSITIVE
    /// false), which defeats keeping it on a token; refused without this flag.
    #[arg(long, requires = "pkcs11_existing_key")]
    pub allow_extractable_key: bool,
}

/// `pkictl init-root`.
#[derive(Debug, Args)]
pub struct InitRootArgs {
    /// Directory to create (must not exist, or be empty).
    #[arg(long)]
    pub dir: PathBuf,
    /// Common name of the root, e.g. "Acme Root CA".
    #[arg(long)]
    pub cn: String,
    /// Organization.
    #[arg(long)]
    pub org: Option<String>,
    /// Key type.
    #[arg(long, value_enum, default_value_t = RootKeyType::EcdsaP256)]
    pub key_type: RootKeyType,
    /// Lifetime (10y, 3650d, ...).
    #[arg(long, default_value = "10y")]
    pub ttl: Ttl,
    /// SPIFFE trust domain (e.g. mesh.example), stored as the root's URI SAN spiffe://TD.
    #[arg(long)]
    pub trust_domain: Option<TrustDomain>,
    /// pathLenConstraint (unlimited when absent).
    #[arg(long)]
    pub path_len: Option<u8>,
    /// File holding the new passphrase (at least 12 characters); prompted twice on a terminal otherwise.
    #[arg(long, value_name = "FILE", conflicts_with = "pkcs11")]
    pub passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub pkcs11: Pkcs11Args,
    /// With --pkcs11: file holding the token's user PIN; prompted on a terminal otherwise.
    #[arg(long, value_name = "FILE", requires = "pkcs11")]
    pub pin_file: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Flags shared by the commands that sign an intermediate.
#[derive(Debug, Args)]
pub struct IntermediateArgs {
    /// Root directory (made by init-root).
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Name of the intermediate (aws, azure, ...): letters, digits, '-', '_' and '.'.
    #[arg(long)]
    pub name: String,
    /// Common name of the intermediate (default: the CSR's CN, else NAME).
    #[arg(long)]
    pub cn: Option<String>,
    /// Lifetime.
    #[arg(long, default_value = "5y")]
    pub ttl: Ttl,
    /// pathLenConstraint (1 lets it sign an istiod sub-CA).
    #[arg(long, default_value_t = 1)]
    pub path_len: u8,
    /// SPIFFE trust domain for the URI SAN (default: the root's).
    #[arg(long)]
    pub trust_domain: Option<TrustDomain>,
    /// Cut notAfter to the root's instead of refusing when --ttl reaches past it.
    #[arg(long)]
    pub clamp: bool,
    /// Renew an existing intermediate: its files move to intermediates/NAME/retired-SERIAL/.
    #[arg(long)]
    pub replace: bool,
    /// File holding the root key's passphrase; prompted on a terminal otherwise.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// File holding the PIN of the token with the root key (a root made with --pkcs11);
    /// prompted on a terminal otherwise.
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pkictl sign-intermediate`.
#[derive(Debug, Args)]
pub struct SignIntermediateArgs {
    #[command(flatten)]
    pub common: IntermediateArgs,
    /// The CSR (PEM), e.g. from `openssl req -new`; its requested extensions are ignored.
    #[arg(long, value_name = "FILE")]
    pub csr: PathBuf,
}

/// `pkictl new-intermediate`.
#[derive(Debug, Args)]
pub struct NewIntermediateArgs {
    #[command(flatten)]
    pub common: IntermediateArgs,
    /// Write key.pem, cert.pem and chain.pem here (default: the key goes to intermediates/NAME/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Key type (ecdsa-p256, ecdsa-p384, rsa2048, rsa3072, rsa4096, ed25519).
    #[arg(long, default_value = "ecdsa-p256")]
    pub key_type: KeyType,
    /// File holding the new key's passphrase; prompted twice on a terminal otherwise.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["unencrypted_key_insecure", "pkcs11"])]
    pub key_passphrase_file: Option<PathBuf>,
    /// Write the new key UNENCRYPTED (for a consumer that cannot decrypt it).
    #[arg(long, conflicts_with = "pkcs11")]
    pub unencrypted_key_insecure: bool,
    #[command(flatten)]
    pub pkcs11: Pkcs11Args,
    /// With --pkcs11: file holding the PIN of the token that gets the new key; prompted on
    /// a terminal otherwise.
    #[arg(long, value_name = "FILE", requires = "pkcs11")]
    pub key_pin_file: Option<PathBuf>,
}

/// `pkictl cacerts`.
#[derive(Debug, Args)]
pub struct CacertsArgs {
    /// Root directory.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Name of the intermediate to publish.
    #[arg(long, value_name = "NAME")]
    pub intermediate: String,
    /// The intermediate's key (default: intermediates/NAME/key.pem).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Passphrase file for an encrypted key; prompted on a terminal otherwise.
    #[arg(long, value_name = "FILE")]
    pub key_passphrase_file: Option<PathBuf>,
    /// More roots for root-cert.pem (during a root rotation).
    #[arg(long, value_name = "FILE")]
    pub extra_root: Vec<PathBuf>,
    /// Directory for ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Also write the `cacerts` Secret manifest (YAML, contains the key: mode 0600).
    #[arg(long, value_name = "FILE")]
    pub secret_yaml: Option<PathBuf>,
    /// Namespace of the Secret.
    #[arg(long, default_value = "istio-system")]
    pub namespace: String,
}

/// `pkictl inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// PEM files: certificates, chains, CSRs, keys, CRLs.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pkictl verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Trusted root(s), PEM.
    #[arg(long, value_name = "FILE")]
    pub root: PathBuf,
    /// Intermediates, PEM.
    #[arg(long, value_name = "FILE")]
    pub chain: Option<PathBuf>,
    /// The certificate to verify (further certificates in the file are used as intermediates).
    #[arg(value_name = "CERT")]
    pub cert: PathBuf,
    /// Verify at this time (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339", value_parser = crate::output::parse_rfc3339)]
    pub at: Option<time::OffsetDateTime>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pkictl ledger`.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// Root directory.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Check the hash chain and that every certificate file under the root is in the ledger.
    #[arg(long)]
    pub verify: bool,
    /// With --verify: the last entry's hash as written down after the last ceremony (a
    /// prefix of 12 or more hex digits); catches entries cut off the end of the ledger.
    #[arg(long, value_name = "HASH", requires = "verify")]
    pub expect_head: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pkictl revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Root directory.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Serial (hex, colons allowed) of a certificate the root signed.
    pub serial: Serial,
    /// unspecified, key-compromise, ca-compromise, affiliation-changed, superseded, cessation-of-operation.
    #[arg(long)]
    pub reason: RevocationReason,
}

/// `pkictl crl`.
#[derive(Debug, Args)]
pub struct CrlArgs {
    /// Root directory.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// How long until the next CRL is due.
    #[arg(long, default_value = "30d")]
    pub next_update: Ttl,
    /// Where to write the CRL (default: DIR/crl.pem).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// File holding the root key's passphrase; prompted on a terminal otherwise.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// File holding the PIN of the token with the root key; prompted on a terminal otherwise.
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
}

/// `pkictl cross-sign`.
#[derive(Debug, Args)]
pub struct CrossSignArgs {
    /// Directory of the root that signs.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// The other root's certificate, whose key and name are certified.
    #[arg(long, value_name = "FILE")]
    pub other_root: PathBuf,
    /// The other root's SHA-256 fingerprint as its owner read it out (`pkictl inspect`
    /// prints it), compared before the passphrase is asked: a file swapped on the way
    /// to this machine is refused. Colons and case do not matter.
    #[arg(long, value_name = "SHA256")]
    pub fingerprint: String,
    /// Where to write the cross-signed certificate.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Lifetime (default: until the earlier of both roots' notAfter).
    #[arg(long)]
    pub ttl: Option<Ttl>,
    /// File holding the signing root key's passphrase; prompted on a terminal otherwise.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// File holding the PIN of the token with the signing root key; prompted on a terminal otherwise.
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
}

/// `pkictl bundle`.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// Root certificates (PEM files, several roots each allowed).
    #[arg(required = true, value_name = "ROOT_PEM")]
    pub roots: Vec<PathBuf>,
    /// Write a SPIFFE trust bundle (JWK Set) instead of PEM.
    #[arg(long, requires = "trust_domain")]
    pub spiffe: bool,
    /// The trust domain the bundle is for (roots naming another one are refused).
    #[arg(long)]
    pub trust_domain: Option<TrustDomain>,
    /// spiffe_sequence of the SPIFFE bundle.
    #[arg(long, default_value_t = 1)]
    pub sequence: u64,
    /// spiffe_refresh_hint in seconds.
    #[arg(long, default_value_t = 300)]
    pub refresh_hint: u64,
    /// Write here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}
