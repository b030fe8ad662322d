//! Basic authentication: `auth-type`, `auth-secret`, `auth-secret-type`, `auth-realm`.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use http::HeaderValue;
use ostium_model::{BasicAuth, Credentials, NamespacedName, PasswordHash};

use super::Parser;
use crate::{Diagnostic, Objects, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &["auth-type", "auth-secret", "auth-secret-type", "auth-realm"];

/// Why a route's basic authentication cannot be evaluated (the route then denies). `prefix`
/// is the annotation prefix, so messages name the keys as the user wrote them.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("{prefix}/auth-type: digest is not supported")]
    DigestUnsupported { prefix: String },
    #[error("{prefix}/auth-type `{value}` is neither basic nor digest")]
    UnknownAuthType { prefix: String, value: String },
    #[error("{prefix}/auth-secret is required")]
    MissingAuthSecret { prefix: String },
    #[error("{prefix}/auth-secret is set without {prefix}/auth-type")]
    MissingAuthType { prefix: String },
    #[error(
        "{prefix}/auth-secret `{reference}` is in another namespace (allow-cross-namespace-resources is off)"
    )]
    OtherNamespace { prefix: String, reference: String },
    #[error("secret {0} not found")]
    SecretNotFound(NamespacedName),
    #[error("secret {0} has no key `auth`")]
    NoAuthKey(NamespacedName),
    #[error("secret {0}: `auth` is not text")]
    AuthNotText(NamespacedName),
    #[error("{prefix}/auth-secret-type `{value}` is neither auth-file nor auth-map")]
    UnknownSecretType { prefix: String, value: String },
    #[error("secret {0} holds no usable user")]
    NoUsableUser(NamespacedName),
}

/// The Secret an `auth-secret` value names: `name` or `namespace/name`, in the Ingress's own
/// namespace unless `cross_namespace` (the ConfigMap's `allow-cross-namespace-resources`).
/// `None` for another namespace.
pub(crate) fn auth_secret(namespace: &str, reference: &str, cross_namespace: bool) -> Option<NamespacedName> {
    match reference.split_once('/') {
        None => Some(NamespacedName::new(namespace, reference)),
        Some((ns, name)) if ns == namespace || cross_namespace => Some(NamespacedName::new(ns, name)),
        Some(_) => None,
    }
}

impl Parser<'_> {
    /// Basic authentication, failing closed: once `auth-type` (or an `auth-secret` asking for
    /// it) is set, any problem gives a route that denies every request.
    pub(super) fn basic_auth(&mut self, objects: &Objects) -> Option<BasicAuth> {
        // ingress-nginx serves an `auth-secret` without `auth-type` unauthenticated; the
        // credentials were asked for all the same, so the route denies.
        let auth_type = match self.value("auth-type") {
            Some(auth_type) => Some(auth_type),
            None => {
                self.value("auth-secret")?;
                None
            }
        };
        let realm = self.value("auth-realm").unwrap_or("");
        let challenge = match HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
            Ok(challenge) if !realm.contains(['"', '\\']) => challenge,
            _ => {
                self.invalid("auth-realm", "printable text without quotes or backslashes");
                HeaderValue::from_static("Basic realm=\"\"")
            }
        };
        let credentials = match auth_type {
            Some(auth_type) => self.credentials(auth_type, objects),
            None => Err(AuthError::MissingAuthType { prefix: self.prefix.to_owned() }),
        };
        let credentials = match credentials {
            Ok(users) => Credentials::Users(users),
            Err(error) => {
                let message = format!("{error}; every request to these paths is refused (503)");
                self.diagnostics.push(Diagnostic::error(
                    self.object.clone(),
                    Reason::AuthMisconfigured,
                    message,
                ));
                Credentials::Deny
            }
        };
        Some(BasicAuth::new(challenge, credentials))
    }

    fn credentials(
        &mut self,
        auth_type: &str,
        objects: &Objects,
    ) -> Result<HashMap<String, PasswordHash>, AuthError> {
        let prefix = || self.prefix.to_owned();
        match auth_type {
            "basic" => {}
            "digest" => return Err(AuthError::DigestUnsupported { prefix: prefix() }),
            other => return Err(AuthError::UnknownAuthType { prefix: prefix(), value: other.to_owned() }),
        }
        let namespace = self.object.namespace.as_deref().unwrap_or_default();
        let reference =
            self.value("auth-secret").ok_or_else(|| AuthError::MissingAuthSecret { prefix: prefix() })?;
        let secret = auth_secret(namespace, reference, self.cross_namespace)
            .ok_or_else(|| AuthError::OtherNamespace { prefix: prefix(), reference: reference.to_owned() })?;
        let data = objects
            .secrets
            .get(&secret)
            .ok_or_else(|| AuthError::SecretNotFound(secret.clone()))?
            .data
            .clone()
            .unwrap_or_default();
        let entries: Vec<(String, String)> = match self.value("auth-secret-type").unwrap_or("auth-file") {
            "auth-file" => {
                let file = data.get("auth").ok_or_else(|| AuthError::NoAuthKey(secret.clone()))?;
                let text =
                    std::str::from_utf8(&file.0).map_err(|_| AuthError::AuthNotText(secret.clone()))?;
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .filter_map(|l| l.split_once(':'))
                    .map(|(user, rest)| (user.to_owned(), rest.split(':').next().unwrap_or("").to_owned()))
                    .collect()
            }
            "auth-map" => data
                .iter()
                .map(|(user, hash)| (user.clone(), String::from_utf8_lossy(&hash.0).trim().to_owned()))
                .collect(),
            other => return Err(AuthError::UnknownSecretType { prefix: prefix(), value: other.to_owned() }),
        };
        let mut users = HashMap::new();
        // The first line of a user is the one that counts, as with nginx, even when its hash is
        // unusable.
        let mut seen = HashSet::new();
        for (user, hash) in entries {
            if !seen.insert(user.clone()) {
                continue;
            }
            match parse_hash(&hash) {
                Some(hash) => {
                    users.insert(user, hash);
                }
                None => {
                    // Names the user, never the hash.
                    let message = format!(
                        "secret {secret}: the password hash of user `{user}` is not bcrypt, $apr1$, {{SHA}}, $5$ or $6$; the user is ignored"
                    );
                    self.diagnostics.push(Diagnostic::error(
                        self.object.clone(),
                        Reason::AuthMisconfigured,
                        message,
                    ));
                }
            }
        }
        if users.is_empty() {
            return Err(AuthError::NoUsableUser(secret));
        }
        Ok(users)
    }
}

/// An htpasswd password hash, by its scheme prefix.
pub(super) fn parse_hash(hash: &str) -> Option<PasswordHash> {
    if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) && hash.len() == 60 {
        return Some(PasswordHash::Bcrypt(hash.into()));
    }
    if let Some(rest) = hash.strip_prefix("$apr1$") {
        let (salt, digest) = rest.split_once('$')?;
        return (!salt.is_empty() && digest.len() == 22)
            .then(|| PasswordHash::Apr1 { salt: salt.into(), hash: digest.into() });
    }
    if let Some(encoded) = hash.strip_prefix("{SHA}") {
        let digest = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
        return Some(PasswordHash::Sha1(digest.try_into().ok()?));
    }
    if (hash.starts_with("$5$") || hash.starts_with("$6$")) && hash.matches('$').count() >= 3 {
        return Some(PasswordHash::ShaCrypt(hash.into()));
    }
    None
}
