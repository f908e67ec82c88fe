//! The issuer's configuration: the file's schema ([`file`], serde types that mirror the
//! YAML), the checks it must pass ([`validate`], errors that name the field at fault), and
//! the validated [`Config`] the rest of the issuer holds ([`settings`]). The file is read
//! once, at start.

pub mod file;
pub mod limits;
pub mod paths;
pub mod sections;
pub mod settings;
pub mod validate;

use std::path::{Path, PathBuf};

pub use crate::invalid::{Invalid, Problem};
pub use file::{ConfigFile, Pkcs11KeyConfig};
pub use limits::Limits;
pub use sections::{AuditSettings, Listen, PolicyConfig, Storage, TlsFiles, TokenSettings};
pub use settings::{ClusterConfig, Config, IntermediateConfig, IntermediateKey, Jwks, JwtConfig};
pub use validate::API_PROFILES;

/// Environment variable that, when set, replaces `storage.url` from the config file.
pub const STORAGE_URL_ENV: &str = "CANOPY_STORAGE_URL";

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The YAML does not match the expected structure.
    #[error("config file {path}: field `{field}`: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Path of the field, like `intermediates[0].cert`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("config file {path}: field `{field}`: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Path of the field.
        field: String,
        /// What is wrong.
        problem: Problem,
    },
}

impl ConfigError {
    fn invalid(path: &Path, invalid: Invalid) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            field: invalid.field,
            problem: invalid.problem,
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file; relative paths in it are taken
    /// from the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut file = read(&text, path)?;
        validate::check(&file).map_err(|e| ConfigError::invalid(path, e))?;
        // Deployments keep the database URL (it may hold a password) in a Secret, exposed
        // as an environment variable rather than written into the config file.
        if let Some(url) = std::env::var(STORAGE_URL_ENV)
            .ok()
            .filter(|u| !u.is_empty())
        {
            file.storage.url = url;
            validate::storage(&file).map_err(|mut e| {
                e.field = format!("{} (from ${STORAGE_URL_ENV})", e.field);
                ConfigError::invalid(path, e)
            })?;
        }
        paths::resolve(&mut file, path.parent().unwrap_or(Path::new(".")));
        Config::from_file(file).map_err(|e| ConfigError::invalid(path, e))
    }

    /// Parses and validates YAML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::from_file(read(text, path)?).map_err(|e| ConfigError::invalid(path, e))
    }
}

/// The YAML as the schema reads it, before any check across fields.
fn read(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::Parse {
            path: path.to_path_buf(),
            field: if field == "." {
                "(top level)".into()
            } else {
                field
            },
            reason: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_client::KubeAccess;
    use canopy::ttl::Ttl;

    const GOOD: &str = r#"
trust_domain: mesh.example
storage: { url: "sqlite:issuer.db" }
roots: [root.pem]
intermediates:
  - { name: aws, cert: aws.pem, key: aws-key.pem, passphrase_file: pass }
  - { name: azure, cert: azure.pem, key: azure-key.pem }
clusters:
  - name: eks-prod
    intermediate: aws
    kubeconfig: kube.yaml
    context: eks
    jwt: { audiences: [canopy], issuer: "https://kubernetes.default.svc", jwks_file: jwks.json }
  - { name: aks-prod, intermediate: azure, in_cluster: true }
policies:
  - name: workloads
    identities: ["spiffe://mesh.example/ns/*/sa/*"]
    spiffe_ids: ["{self}"]
    dns_names: ["*.svc.cluster.local"]
    max_ttl: 24h
    key_types: [ecdsa-p256]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("issuer.yaml"))
    }

    #[test]
    fn good_config_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.trust_domain.as_str(), "mesh.example");
        assert_eq!(c.clusters.len(), 2);
        assert_eq!(c.default_intermediate(), "aws");
        assert_eq!(c.policies[0].max_ttl, Ttl::hours(24));
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let mut file = read(GOOD, Path::new("issuer.yaml")).unwrap();
        paths::resolve(&mut file, Path::new("/etc/canopy"));
        let c = Config::from_file(file).unwrap();
        assert_eq!(c.roots[0], PathBuf::from("/etc/canopy/root.pem"));
        assert_eq!(c.storage.url, "sqlite:///etc/canopy/issuer.db");
        match &c.intermediates[0].key {
            IntermediateKey::File {
                path,
                passphrase_file,
            } => {
                assert_eq!(path, Path::new("/etc/canopy/aws-key.pem"));
                assert_eq!(
                    passphrase_file.as_deref(),
                    Some(Path::new("/etc/canopy/pass"))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cluster_is_reached_one_way() {
        let c = parse(GOOD).unwrap();
        assert_eq!(
            c.clusters[0].access,
            KubeAccess::Kubeconfig {
                path: PathBuf::from("kube.yaml"),
                context: Some("eks".into())
            }
        );
        assert_eq!(c.clusters[1].access, KubeAccess::InCluster);
        let both = GOOD.replace("in_cluster: true", "in_cluster: true, kubeconfig: k.yaml");
        assert_eq!(field_of(&both), "clusters[1].in_cluster");
        let neither = GOOD.replace(", in_cluster: true", "");
        assert_eq!(
            parse(&neither).unwrap().clusters[1].access,
            KubeAccess::Inferred
        );
    }

    #[test]
    fn an_intermediate_key_is_a_file_or_a_token_never_both() {
        let token = "pkcs11: { module: /m.so, token_label: t, key_label: k, pin_file: pin }";
        let both = GOOD.replace(
            "key: azure-key.pem",
            &format!("key: azure-key.pem, {token}"),
        );
        assert_eq!(field_of(&both), "intermediates[1]");
        let on_token = GOOD.replace("key: azure-key.pem", token);
        let c = parse(&on_token).unwrap();
        assert!(matches!(
            c.intermediates[1].key,
            IntermediateKey::Pkcs11 { .. }
        ));
        let with_pass = on_token.replace("pin_file: pin }", "pin_file: pin }, passphrase_file: p");
        assert_eq!(field_of(&with_pass), "intermediates[1].passphrase_file");
        let two_tokens = on_token.replace("token_label: t", "token_label: t, slot: 1");
        assert_eq!(field_of(&two_tokens), "intermediates[1].pkcs11");
    }

    #[test]
    fn problems_keep_their_messages() {
        let err = parse(&GOOD.replace("intermediate: azure", "intermediate: gcp")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file issuer.yaml: field `clusters[1].intermediate`: no intermediate has this name"
        );
        match err {
            ConfigError::Invalid { problem, .. } => {
                assert_eq!(problem, Problem::NoSuchIntermediate)
            }
            e => panic!("{e}"),
        }
        let dup = GOOD.replace("name: azure", "name: aws");
        assert_eq!(
            parse(&dup).unwrap_err().to_string(),
            "config file issuer.yaml: field `intermediates[1].name`: duplicate name"
        );
    }

    fn field_of(text: &str) -> String {
        match parse(text).unwrap_err() {
            ConfigError::Parse { field, .. } | ConfigError::Invalid { field, .. } => field,
            e => panic!("{e}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(&GOOD.replace("mesh.example\n", "Mesh.Example\n")),
            "trust_domain"
        );
        assert_eq!(
            field_of(&GOOD.replace("max_ttl: 24h", "max_ttl: 24 hours")),
            "policies[0].max_ttl"
        );
        assert_eq!(
            field_of(&GOOD.replace("intermediate: azure", "intermediate: gcp")),
            "clusters[1].intermediate"
        );
        assert_eq!(
            field_of(&GOOD.replace("name: eks-prod", "name: EKS")),
            "clusters[0].name"
        );
        assert_eq!(
            field_of(&GOOD.replace("key_types: [ecdsa-p256]", "key_types: [dsa]")),
            "policies[0].key_types[0]"
        );
        assert_eq!(
            field_of(&GOOD.replace("{self}", "spiffe://other.example/x")),
            "policies[0].spiffe_ids[0]"
        );
        assert_eq!(
            field_of(&GOOD.replace("jwks_file: jwks.json", "jwks_file: j, jwks: {}")),
            "clusters[0].jwt"
        );
        assert_eq!(
            field_of(&GOOD.replace("sqlite:issuer.db", "mysql://x")),
            "storage.url"
        );
        assert!(field_of(&GOOD.replace("roots:", "rootz:")).contains("rootz"));
    }

    #[test]
    fn the_readme_example_is_valid() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```yaml\n").unwrap() + 8;
        let end = start + readme[start..].find("```").unwrap();
        let c = parse(&readme[start..end]).unwrap();
        assert_eq!(c.clusters[0].name.as_str(), "eks-prod");
        // The README's `limits:` block spells out the defaults.
        assert_eq!(
            format!("{:?}", c.limits),
            format!("{:?}", Limits::default())
        );
    }

    #[test]
    fn connection_limits_are_validated() {
        let with = |limits: &str| format!("{GOOD}limits: {{ {limits} }}\n");
        assert!(parse(&with("max_connections: 10, max_connections_per_peer: 10")).is_ok());
        assert_eq!(
            field_of(&with("max_connections: 10, max_connections_per_peer: 11")),
            "limits.max_connections_per_peer"
        );
        assert_eq!(
            field_of(&with("max_connections: 0")),
            "limits.max_connections"
        );
        assert_eq!(
            field_of(&with("body_bytes: 65536, buffered_body_bytes: 65535")),
            "limits.buffered_body_bytes"
        );
        assert_eq!(
            field_of(&with("http2_max_concurrent_streams: 0")),
            "limits.http2_max_concurrent_streams"
        );
        assert_eq!(
            field_of(&with("peer_burst: 0")),
            "limits.peer_rate_per_second"
        );
        assert_eq!(field_of(&with("idle_timeout: 0s")), "limits.idle_timeout");
        assert!(field_of(&with("max_conections: 5")).contains("max_conections"));
    }
}
