//! Errors from a node. `Display` says what failed; the libvirt error is the `source`.

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot connect to libvirt at {uri}; is libvirtd running? (start it with `libvirtd -d` or `systemctl start libvirtd`, or run `kvmctl host setup`)")]
    Connect {
        uri: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("lost the connection to libvirt at {uri}; is libvirtd running? (start it with `libvirtd -d` or `systemctl start libvirtd`); the next request reconnects")]
    Lost {
        uri: String,
        #[source]
        source: Box<NodeError>,
    },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("libvirt refused to {op} {name:?} in its current state")]
    InvalidState {
        op: &'static str,
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("libvirt failed to {op} {name:?}")]
    Libvirt {
        op: &'static str,
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot read the data for volume {name:?}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build XML")]
    Xml(#[from] crate::xml::XmlError),
    /// The thread running the call failed (it panicked or the runtime is shutting down).
    #[error("a call to the node did not finish: {0}")]
    Worker(String),
}

impl NodeError {
    /// Classifies a libvirt error raised while doing `op` on `name`.
    pub(crate) fn from_virt(op: &'static str, kind: &'static str, name: &str, source: virt::error::Error) -> Self {
        use virt::error::ErrorNumber as N;
        match source.code() {
            N::NoDomain | N::NoStorageVolume | N::NoStoragePool | N::NoNetwork => NodeError::NotFound { kind, name: name.to_owned() },
            N::OperationInvalid => NodeError::InvalidState { op, name: name.to_owned(), source },
            // The test driver reports some state conflicts as internal errors.
            _ if source.message().contains("already running") || source.message().contains("not running") => {
                NodeError::InvalidState { op, name: name.to_owned(), source }
            }
            N::DomExist | N::StorageVolExist | N::NetworkExist => NodeError::AlreadyExists { kind, name: name.to_owned() },
            _ if source.message().contains("already exists") => NodeError::AlreadyExists { kind, name: name.to_owned() },
            _ => NodeError::Libvirt { op, name: name.to_owned(), source },
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, NodeError::NotFound { .. })
    }
}

impl From<NodeError> for kvmctl_core::Error {
    fn from(e: NodeError) -> Self {
        use kvmctl_core::Error as E;
        let chain = kvmctl_core::error::chain(&e);
        match e {
            NodeError::NotFound { kind, name } => E::NotFound { kind, name },
            NodeError::AlreadyExists { .. } | NodeError::InvalidState { .. } => E::Conflict(chain),
            NodeError::Connect { .. } | NodeError::Lost { .. } => E::Unavailable(chain),
            NodeError::Libvirt { .. } | NodeError::Xml(_) | NodeError::Read { .. } | NodeError::Worker(_) => E::Internal(chain),
        }
    }
}

impl From<crate::xml::XmlError> for kvmctl_core::Error {
    fn from(e: crate::xml::XmlError) -> Self {
        kvmctl_core::Error::Internal(kvmctl_core::error::chain(&e))
    }
}
