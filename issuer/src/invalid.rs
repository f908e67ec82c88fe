//! A configuration value that breaks a rule: which field, and why. A leaf that imports
//! nothing from the rest of the issuer, so each subsystem checks its own settings with
//! these errors without importing the configuration that gathers them.

/// A value the configuration may not hold: which field, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct Invalid {
    /// Path of the field, like `clusters[1].intermediate`.
    pub field: String,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// It names an intermediate that is not configured.
    #[error("no intermediate has this name")]
    NoSuchIntermediate,
    /// It names a policy that is not configured.
    #[error("no policy has this name")]
    NoSuchPolicy,
    /// It names a cluster that is not configured.
    #[error("no cluster has this name")]
    NoSuchCluster,
    /// An intermediate's or a policy's name is not a short lowercase word.
    #[error("use 1-63 lowercase letters, digits, '-' or '_'")]
    BadName,
    /// The same name twice; says what kind of name.
    #[error("duplicate {0}")]
    Duplicate(&'static str),
    /// A count or size below its minimum.
    #[error("must be at least {0}")]
    AtLeast(u64),
    /// A rule of the file, in words: what to set or not to set.
    #[error("{0}")]
    Rule(&'static str),
    /// A subsystem's own check of its settings (retention, Istio, PKCS#11, signer names).
    #[error("{0}")]
    Refused(String),
}

impl Problem {
    /// At `field`.
    pub fn at(self, field: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            problem: self,
        }
    }
}

impl Invalid {
    /// The same problem with its field named from further up (`below("clusters[0].istio")`).
    pub fn below(self, parent: &str) -> Invalid {
        Invalid {
            field: format!("{parent}.{}", self.field),
            problem: self.problem,
        }
    }
}
