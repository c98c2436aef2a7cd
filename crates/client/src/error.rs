//! What can go wrong in the SDK.

use passerelle_proto::{AccountId, Address, Problem, ProblemType};

use crate::provisioning::ProvisioningError;

/// Everything an SDK operation can fail with.
///
/// No variant carries a secret: not the password, not a key, not a
/// message's text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The hub answered with an RFC 9457 problem; [`ClientError::problem_kind`]
    /// names it.
    #[error("the hub refused: {0}")]
    Problem(Box<Problem>),
    /// The hub could not be reached, or the connection broke.
    #[error("cannot reach the hub: {0}")]
    Transport(String),
    /// The hub answered something this SDK cannot read.
    #[error("unexpected answer from the hub: {0}")]
    InvalidResponse(String),
    /// The delivery WebSocket failed.
    #[error("WebSocket: {0}")]
    WebSocket(String),
    /// The local database failed.
    #[error("local store: {0}")]
    Storage(String),
    /// The local database was written by a newer SDK.
    #[error("local store has schema version {found}; this SDK knows up to {supported}")]
    SchemaTooNew {
        /// The database's version.
        found: u32,
        /// The newest version this SDK knows.
        supported: u32,
    },
    /// The database holds no registered device (or registration did not
    /// finish).
    #[error("this database holds no registered device")]
    NotRegistered,
    /// The database already holds a registered device.
    #[error("this database already holds a registered device")]
    AlreadyRegistered,
    /// The database holds the identity of a registration (or a link) that
    /// did not finish: the hub may or may not have accepted it before the
    /// process stopped, and this database does not know the account. It is
    /// neither opened nor overwritten: registering again would make a new
    /// identity, and the hub may already hold the handle (409
    /// `handle-taken`).
    #[error(
        "this database holds an unfinished registration: the hub may have accepted it, but the          account was never recorded here; it is left untouched (register with another database          path, or delete this one if the hub never accepted the registration)"
    )]
    UnfinishedRegistration,
    /// The Signal layer refused (a bad bundle, an untrusted identity, ...).
    #[error("Signal protocol: {0}")]
    Signal(#[from] passerelle_signal::Error),
    /// Linking a device failed: a bad URI, or a provisioning message that
    /// does not decrypt.
    #[error("linking: {0}")]
    Provisioning(#[from] ProvisioningError),
    /// A peer whose identity key the user verified presented another key:
    /// nothing was sent and nothing stored. Compare safety numbers again,
    /// and accept the new key with
    /// [`Client::accept_identity`](crate::Client::accept_identity).
    #[error("the verified identity key of {} changed; accept the new key to continue", .address.as_ref().map_or_else(|| account.to_string(), ToString::to_string))]
    UntrustedIdentity {
        /// The peer's account.
        account: AccountId,
        /// Its address, when known.
        address: Option<Address>,
    },
    /// The recipient's device list kept changing while sending.
    #[error("the recipient's devices did not settle after {0} attempts")]
    DevicesUnsettled(u32),
    /// An argument was refused before anything was sent.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Waiting for something took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

impl ClientError {
    /// The hub's problem document, if the hub refused.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Problem(p) => Some(p),
            _ => None,
        }
    }

    /// The kind of the hub's problem, if the hub refused with a known one.
    pub fn problem_kind(&self) -> Option<ProblemType> {
        self.problem().and_then(|p| p.kind())
    }

    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<rusqlite::Error> for ClientError {
    fn from(e: rusqlite::Error) -> Self {
        Self::storage(e)
    }
}

impl From<Problem> for ClientError {
    fn from(p: Problem) -> Self {
        Self::Problem(Box::new(p))
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        // reqwest's text names the URL and the cause; credentials travel in
        // a header and never appear in it.
        Self::Transport(e.without_url().to_string())
    }
}

/// The result type of the SDK.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
