//! Per-operation errors: publish, subscribe, connect, configuration.

/// A boxed transport error (the backend's own error type, kept as the source).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a publish did not reach the transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic is not a valid concrete topic.
    #[error("invalid topic {topic:?}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        #[source]
        source: decnet_topics::TopicError,
    },
    /// The encoded envelope is larger than the bus's maximum message size,
    /// so every subscriber would drop it.
    #[error("encoded event of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Size of the encoded envelope in bytes.
        size: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The bus was closed with [`crate::Bus::close`].
    #[error("bus is closed")]
    Closed,
    /// The transport refused the message or could not be reached in time.
    #[error("bus transport failed")]
    Transport(#[source] BoxError),
    /// The backend cannot carry this message at all, so it was not sent
    /// (the `unix` backend: a body that is not a JSON object, a topic that
    /// is not ASCII or too long for a frame header; DECNET's broker would
    /// close the connection on those). Trying again cannot succeed.
    #[error("bus backend cannot carry this message")]
    Rejected(#[source] BoxError),
}

impl PublishError {
    /// Whether trying again later may succeed (a transport failure).
    pub fn is_retryable(&self) -> bool {
        matches!(self, PublishError::Transport(_))
    }

    /// A transport error from any error value.
    pub fn transport(err: impl Into<BoxError>) -> PublishError {
        PublishError::Transport(err.into())
    }
}

/// Why a subscription could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The pattern is not a valid NATS-style pattern.
    #[error("invalid pattern {pattern:?}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        #[source]
        source: decnet_topics::TopicError,
    },
    /// The bus was closed with [`crate::Bus::close`].
    #[error("bus is closed")]
    Closed,
    /// The transport refused the subscription.
    #[error("bus transport failed")]
    Transport(#[source] BoxError),
    /// The backend cannot carry this pattern at all (the `unix` backend: a
    /// pattern that is not ASCII or too long for a frame header).
    #[error("bus backend cannot carry this pattern")]
    Rejected(#[source] BoxError),
}

impl SubscribeError {
    /// A transport error from any error value.
    pub fn transport(err: impl Into<BoxError>) -> SubscribeError {
        SubscribeError::Transport(err.into())
    }
}

/// Why [`crate::Bus::connect`] could not build a bus.
///
/// A broker that is down is not an error: the NATS and Redis backends start
/// in [`crate::ConnectionState::Reconnecting`] and connect in the background.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration asks for a backend this build does not contain.
    #[error("bus backend {kind:?} needs the {feature:?} cargo feature of decnet-bus")]
    FeatureDisabled {
        /// The backend asked for (`"nats"`, `"redis"`).
        kind: &'static str,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// A custom backend cannot be built from configuration: construct it and
    /// pass it to [`crate::Bus::from_backend`].
    #[error("bus backend {name:?} is an embedder's own: build it with Bus::from_backend")]
    CustomBackend {
        /// The custom backend's name.
        name: &'static str,
    },
    /// The backend does not exist on this platform (`unix` needs Unix-domain
    /// sockets).
    #[error("bus backend {kind:?} is not available on this platform")]
    UnsupportedPlatform {
        /// The backend asked for.
        kind: &'static str,
    },
    /// The configured URL cannot be used (the message never contains the URL,
    /// which may carry a password).
    #[error("invalid {kind} url")]
    InvalidUrl {
        /// The backend whose URL is wrong.
        kind: &'static str,
        /// The client library's complaint.
        #[source]
        source: BoxError,
    },
}

/// A bad configuration value; the message names the environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable holds a value outside its allowed set.
    #[error("{var}={value:?} is invalid: expected {expected}")]
    InvalidValue {
        /// The environment variable, e.g. `DECNET_BUS_TYPE`.
        var: &'static str,
        /// The value found.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A variable chooses a backend this build does not contain.
    #[error("{var}={value:?} needs decnet-bus built with the {feature:?} feature")]
    FeatureDisabled {
        /// The environment variable, e.g. `DECNET_BUS_TYPE`.
        var: &'static str,
        /// The value found.
        value: String,
        /// The cargo feature that would enable it.
        feature: &'static str,
    },
    /// A variable is unset and its documented fallback cannot be computed.
    #[error("{var} is not set and {reason}")]
    Unresolved {
        /// The environment variable to set, e.g. `DECNET_BUS_SOCKET`.
        var: &'static str,
        /// Why no fallback applies.
        reason: &'static str,
    },
}

impl ConfigError {
    /// The environment variable this error is about.
    pub fn var(&self) -> &'static str {
        match self {
            ConfigError::InvalidValue { var, .. }
            | ConfigError::FeatureDisabled { var, .. }
            | ConfigError::Unresolved { var, .. } => var,
        }
    }
}
