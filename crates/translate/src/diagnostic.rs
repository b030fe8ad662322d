//! Problems found in user objects, tied to the object they are about.

use ostium_model::NamespacedName;
use std::fmt;

/// The kinds of object ostium reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Ingress,
    IngressClass,
    Service,
    EndpointSlice,
    Endpoints,
    Secret,
    ConfigMap,
}

/// A Kubernetes object, by kind and identity (`namespace` is `None` for cluster-scoped kinds).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: ObjectKind,
    pub namespace: Option<String>,
    pub name: String,
}

/// One problem with one object. Translation never fails as a whole: the broken piece is skipped
/// (or, for a backend, answers 503) and a diagnostic says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub object: ObjectRef,
    pub severity: Severity,
    pub reason: Reason,
    pub message: String,
}

/// How bad a problem is. An `Error` means some of what the object asks for is not served as
/// written; a `Warning` means it is, with a caveat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Error,
}

/// What went wrong, named for the condition. `as_str` is the Kubernetes Event reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    InvalidHost,
    InvalidPath,
    InvalidPathType,
    InvalidBackend,
    UnsupportedBackend,
    MissingService,
    UnknownServicePort,
    MissingSecret,
    InvalidTlsSecret,
    CertificateHostMismatch,
    TlsHostConflict,
    PathConflict,
    DefaultBackendConflict,
    NoRules,
    UnknownIngressClass,
    InvalidAnnotation,
    UnsupportedAnnotation,
    /// A name under the annotation prefix that is not an ingress-nginx annotation (a typo).
    UnknownAnnotation,
    RefusedAnnotation,
    /// An annotation that restricts access and is not implemented: its routes deny (503).
    UnsupportedAccessControl,
    AuthMisconfigured,
    /// `--configmap` names a ConfigMap that does not exist (every setting keeps its default), or
    /// one of its keys does (no headers are taken from it).
    MissingConfigMap,
    /// A key of the `--configmap` ConfigMap with a value ostium cannot read: its default is kept.
    InvalidSetting,
    /// A key of the `--configmap` ConfigMap that ostium knows and does not implement.
    UnsupportedSetting,
    /// A key of the `--configmap` ConfigMap that tunes nginx internals: accepted, no effect.
    NoEffectSetting,
    /// A key of the `--configmap` ConfigMap that ingress-nginx does not know.
    UnknownSetting,
    /// An entry of a TCP or UDP services ConfigMap that cannot be served (a bad port or
    /// reference, a port of the controller's listeners, an unsupported Service): no listener.
    InvalidStreamService,
}

// === impl Diagnostic ===

impl Diagnostic {
    pub fn error(object: ObjectRef, reason: Reason, message: impl Into<String>) -> Self {
        Self { object, severity: Severity::Error, reason, message: message.into() }
    }

    pub fn warning(object: ObjectRef, reason: Reason, message: impl Into<String>) -> Self {
        Self { object, severity: Severity::Warning, reason, message: message.into() }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{severity}: {}: {}: {}", self.object, self.reason.as_str(), self.message)
    }
}

// === impl ObjectRef ===

impl ObjectKind {
    /// Lower case, as `kubectl get` spells resources.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::IngressClass => "ingressclass",
            Self::Service => "service",
            Self::EndpointSlice => "endpointslice",
            Self::Endpoints => "endpoints",
            Self::Secret => "secret",
            Self::ConfigMap => "configmap",
        }
    }
}

impl ObjectRef {
    pub fn new(kind: ObjectKind, namespace: Option<&str>, name: &str) -> Self {
        Self { kind, namespace: namespace.map(str::to_owned), name: name.to_owned() }
    }

    /// The Ingress this names, if it names one.
    pub fn ingress(&self) -> Option<NamespacedName> {
        (self.kind == ObjectKind::Ingress)
            .then(|| NamespacedName::new(self.namespace.as_deref().unwrap_or_default(), &self.name))
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.as_str();
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

// === impl Reason ===

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidHost => "InvalidHost",
            Self::InvalidPath => "InvalidPath",
            Self::InvalidPathType => "InvalidPathType",
            Self::InvalidBackend => "InvalidBackend",
            Self::UnsupportedBackend => "UnsupportedBackend",
            Self::MissingService => "MissingService",
            Self::UnknownServicePort => "UnknownServicePort",
            Self::MissingSecret => "MissingSecret",
            Self::InvalidTlsSecret => "InvalidTlsSecret",
            Self::CertificateHostMismatch => "CertificateHostMismatch",
            Self::TlsHostConflict => "TlsHostConflict",
            Self::PathConflict => "PathConflict",
            Self::DefaultBackendConflict => "DefaultBackendConflict",
            Self::NoRules => "NoRules",
            Self::UnknownIngressClass => "UnknownIngressClass",
            Self::InvalidAnnotation => "InvalidAnnotation",
            Self::UnsupportedAnnotation => "UnsupportedAnnotation",
            Self::UnknownAnnotation => "UnknownAnnotation",
            Self::RefusedAnnotation => "RefusedAnnotation",
            Self::UnsupportedAccessControl => "UnsupportedAccessControl",
            Self::AuthMisconfigured => "AuthMisconfigured",
            Self::MissingConfigMap => "MissingConfigMap",
            Self::InvalidSetting => "InvalidSetting",
            Self::UnsupportedSetting => "UnsupportedSetting",
            Self::NoEffectSetting => "NoEffectSetting",
            Self::UnknownSetting => "UnknownSetting",
            Self::InvalidStreamService => "InvalidStreamService",
        }
    }
}
