//! Timeouts, retries, request bodies and buffering: `proxy-connect-timeout`,
//! `proxy-send-timeout`, `proxy-read-timeout`, `proxy-next-upstream` (+ `-tries`, `-timeout`),
//! `proxy-body-size`, `proxy-request-buffering`, `client-body-buffer-size`, and the response
//! buffering keys, which only tune nginx's memory and are read for their diagnostics alone.

use std::time::Duration;

use ostium_model::{
    MAX_CONNECT_TIMEOUT, NextUpstream, Policy, RetryCondition, RetryConditions, UpstreamTimeouts,
};

use super::{Parser, parse_size};
use crate::{Diagnostic, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &[
    "proxy-connect-timeout",
    "proxy-send-timeout",
    "proxy-read-timeout",
    "proxy-next-upstream",
    "proxy-next-upstream-tries",
    "proxy-next-upstream-timeout",
    "proxy-body-size",
    "proxy-request-buffering",
    "client-body-buffer-size",
    "proxy-buffering",
    "proxy-buffer-size",
    "proxy-buffers-number",
    "proxy-busy-buffers-size",
    "proxy-max-temp-file-size",
];

impl Parser<'_> {
    /// Sets the route policy's upstream clocks, retries and request body handling.
    pub(super) fn upstream(&mut self, policy: &mut Policy) {
        policy.upstream_timeouts = UpstreamTimeouts {
            connect: self.connect_timeout(),
            send: self.seconds("proxy-send-timeout"),
            read: self.seconds("proxy-read-timeout"),
        };
        policy.next_upstream = self.next_upstream();
        if let Some(size) = self.value("proxy-body-size") {
            match parse_size(size) {
                Some(0) => policy.max_body_size = None,
                Some(bytes) => policy.max_body_size = Some(bytes),
                None => self.invalid("proxy-body-size", "a size such as 8m, 512k or 0"),
            }
        }
        policy.request_buffering = self.on_off("proxy-request-buffering", "on").unwrap_or(true);
        if let Some(size) = self.value("client-body-buffer-size") {
            // The template writes the directive only for a size nginx reads there (no `g`).
            match parse_size(size).filter(|_| !size.trim().ends_with(['g', 'G'])) {
                Some(bytes) => policy.client_body_buffer_size = bytes,
                None => self.warn_default("client-body-buffer-size", "8k"),
            }
        }
        self.response_buffering();
    }

    /// `proxy-connect-timeout`: whole seconds, at most [`MAX_CONNECT_TIMEOUT`].
    fn connect_timeout(&mut self) -> Option<Duration> {
        let timeout = self.seconds("proxy-connect-timeout")?;
        if timeout <= MAX_CONNECT_TIMEOUT {
            return Some(timeout);
        }
        let message = format!(
            "annotation {}/proxy-connect-timeout: connections are given at most {} seconds (nginx's limit)",
            self.prefix,
            MAX_CONNECT_TIMEOUT.as_secs()
        );
        self.diagnostics.push(Diagnostic::warning(self.object.clone(), Reason::InvalidAnnotation, message));
        Some(MAX_CONNECT_TIMEOUT)
    }

    /// `proxy-next-upstream` (space-separated conditions, `non_idempotent`, or `off`, which wins
    /// over the rest as in nginx), `proxy-next-upstream-tries` and `-timeout` (whole seconds, 0
    /// for no limit). An invalid value keeps its default, as ingress-nginx.
    fn next_upstream(&mut self) -> NextUpstream {
        let mut next = NextUpstream::default();
        if let Some(list) = self.value("proxy-next-upstream") {
            let mut conditions = RetryConditions::default();
            let (mut non_idempotent, mut off, mut valid) = (false, false, !list.trim().is_empty());
            for token in list.split_whitespace() {
                match (token, RetryCondition::from_token(token)) {
                    (_, Some(condition)) => conditions = conditions.with(condition),
                    ("non_idempotent", None) => non_idempotent = true,
                    ("off", None) => off = true,
                    _ => valid = false,
                }
            }
            match (valid, off) {
                (false, _) => self.warn_default("proxy-next-upstream", "error timeout"),
                (true, true) => next.conditions = RetryConditions::default(),
                (true, false) => (next.conditions, next.non_idempotent) = (conditions, non_idempotent),
            }
        }
        if let Some(tries) = self.value("proxy-next-upstream-tries") {
            match tries.trim().parse::<u32>() {
                Ok(tries) => next.tries = tries,
                Err(_) => self.warn_default("proxy-next-upstream-tries", "3"),
            }
        }
        if let Some(seconds) = self.value("proxy-next-upstream-timeout") {
            match seconds.trim().parse::<u32>() {
                Ok(0) => next.timeout = None,
                Ok(seconds) => next.timeout = Some(Duration::from_secs(seconds.into())),
                Err(_) => self.warn_default("proxy-next-upstream-timeout", "0"),
            }
        }
        next
    }

    /// `proxy-buffering` and the sizes of nginx's response buffers: validated and reported as
    /// ingress-nginx would. Responses are streamed as they arrive either way; `proxy-buffering:
    /// on` only lets `limit-rate` apply (see `rate_limit`).
    fn response_buffering(&mut self) {
        // With `limit-rate`, `on` is how the rate is asked for: nothing to warn about.
        if self.on_off("proxy-buffering", "off") == Some(true) && self.value("limit-rate").is_none() {
            let message = format!(
                "annotation {}/proxy-buffering: on is accepted, but responses are always streamed to the client as they arrive (it only lets limit-rate apply)",
                self.prefix
            );
            self.diagnostics.push(Diagnostic::warning(
                self.object.clone(),
                Reason::InvalidAnnotation,
                message,
            ));
        }
        for (name, default) in [
            ("proxy-buffer-size", "4k"),
            ("proxy-busy-buffers-size", ""),
            ("proxy-max-temp-file-size", "1024m"),
        ] {
            if self.value(name).is_some_and(|size| parse_size(size).is_none()) {
                self.warn_default(name, default);
            }
        }
        if self.value("proxy-buffers-number").is_some_and(|n| !n.trim().parse::<u32>().is_ok_and(|n| n > 0)) {
            self.warn_default("proxy-buffers-number", "4");
        }
    }

    /// `on` or `off` (exactly, once trimmed), as ingress-nginx's option validator reads them; an
    /// invalid value is reported and `None` returned.
    fn on_off(&mut self, name: &str, default: &str) -> Option<bool> {
        match self.value(name)?.trim() {
            "on" => Some(true),
            "off" => Some(false),
            _ => {
                self.warn_default(name, default);
                None
            }
        }
    }
}
