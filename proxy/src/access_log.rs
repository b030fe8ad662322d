//! The access log in a ConfigMap's `log-format-upstream`: one line per finished request, the
//! template's text with its nginx variables filled in and escaped as nginx does, written as it is
//! (no log event around it) to the access log output, stdout unless told otherwise, so that
//! pipelines that parse ingress-nginx's lines parse ostium's.
//!
//! What a line needs is kept while the request is handled: from the request head what the
//! template reads of it (its headers by [`LogFormat::request_headers`]), from the response head
//! likewise, the rest from the request's [`AccessEntry`]. The line is rendered into a buffer kept
//! per thread and written with one call.

use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};
use ostium_model::{
    AccessLogSettings, Backend, LogEscape, LogFormat, LogPart, LogVariable, NamespacedName, PortRef,
    civil_from_days,
};

use crate::body::AccessEntry;
use crate::forward::Trace;
use crate::{ConnectionInfo, Proxy};

/// Where access log lines go: stdout, as ingress-nginx's `/var/log/nginx/access.log` (a link to
/// `/dev/stdout`), or any writer (tests, an embedding program).
#[derive(Clone, Default)]
pub struct AccessLogOutput {
    writer: Option<Arc<Mutex<dyn Write + Send>>>,
}

impl AccessLogOutput {
    /// Lines go to `writer`, one `write_all` each.
    pub fn writer(writer: impl Write + Send + 'static) -> Self {
        Self { writer: Some(Arc::new(Mutex::new(writer))) }
    }

    fn write_line(&self, line: &[u8]) {
        // A log that cannot be written loses the line; the request is done either way.
        let _ = match &self.writer {
            None => std::io::stdout().lock().write_all(line),
            Some(writer) => match writer.lock() {
                Ok(mut writer) => writer.write_all(line),
                Err(_) => Ok(()),
            },
        };
    }
}

impl fmt::Debug for AccessLogOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.writer.is_some() { "AccessLogOutput(writer)" } else { "AccessLogOutput(stdout)" })
    }
}

/// What the access log keeps of a request from its head on, when the request is logged.
#[derive(Debug)]
pub(crate) struct Logged {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) host: Option<HeaderValue>,
    pub(crate) version: Version,
    /// Whether a request no route takes is logged (`enable-access-log-for-default-backend`).
    pub(crate) default_backend: bool,
    pub(crate) line: Option<LineRequest>,
}

/// What a `log-format-upstream` line reads of the request head.
#[derive(Debug)]
pub(crate) struct LineRequest {
    format: Arc<LogFormat>,
    /// The values of the format's request headers, by their index in it.
    headers: Vec<(usize, HeaderValue)>,
    /// The request head's length as HTTP/1.1 would send it, when the format asks for it.
    head_length: u64,
}

/// Everything a `log-format-upstream` line needs besides the [`AccessEntry`].
#[derive(Debug)]
pub(crate) struct Line {
    request: LineRequest,
    version: Version,
    response_headers: Vec<(usize, HeaderValue)>,
    response_head_length: u64,
    client_ip: HeaderValue,
    is_tls: bool,
    tls: Option<TlsParameters>,
    upstream_started: Option<Instant>,
    upstream_status: Option<u16>,
    names: Option<Box<UpstreamNames>>,
    output: AccessLogOutput,
}

/// What a TLS connection agreed, for `$ssl_protocol`, `$ssl_cipher` and `$ssl_server_name`.
#[derive(Debug)]
struct TlsParameters {
    version: Option<rustls::ProtocolVersion>,
    cipher_suite: Option<rustls::CipherSuite>,
    server_name: Option<Box<str>>,
}

/// The route's Service and the canary's that took the request, for `$proxy_upstream_name`,
/// `$proxy_alternative_upstream_name`, `$service_name` and `$service_port`.
#[derive(Debug)]
pub(crate) struct UpstreamNames {
    service: Arc<NamespacedName>,
    port: PortRef,
    canary: Option<(Arc<NamespacedName>, PortRef)>,
}

impl UpstreamNames {
    pub(crate) fn new(route: &Backend, canary: Option<&Backend>) -> Self {
        Self {
            service: route.service.clone(),
            port: route.port.clone(),
            canary: canary.map(|c| (c.service.clone(), c.port.clone())),
        }
    }
}

impl Proxy {
    /// The start of a request's access log: `None` when it is not logged at all (`--access-log
    /// off`, `disable-access-log`, `skip-access-log-urls`). Sets what the route should keep for
    /// the line on `trace`.
    pub(crate) fn access_log_start<B>(&self, request: &Request<B>, trace: &mut Trace) -> Option<Logged> {
        if !self.inner.config.access_log {
            return None;
        }
        let (format, default_backend) = {
            let global = trace.global.clone();
            let settings: &AccessLogSettings = &global.access_log;
            let request_uri = request.uri().path_and_query().map_or("/", |p| p.as_str());
            if settings.disabled || settings.skips(request_uri) {
                return None;
            }
            (settings.format.clone(), settings.default_backend)
        };
        let line = format.map(|format| {
            let names = [
                LogVariable::ProxyUpstreamName,
                LogVariable::ProxyAlternativeUpstreamName,
                LogVariable::ServiceName,
                LogVariable::ServicePort,
            ];
            trace.wants_upstream_names = uses_any(&format, &names);
            LineRequest::capture(format, request)
        });
        Some(Logged {
            method: request.method().clone(),
            uri: request.uri().clone(),
            host: request.headers().get(header::HOST).cloned(),
            version: request.version(),
            default_backend,
            line,
        })
    }
}

impl LineRequest {
    fn capture<B>(format: Arc<LogFormat>, request: &Request<B>) -> Self {
        let headers = captured(format.request_headers(), request.headers());
        let head_length = if format.uses(&LogVariable::RequestLength) {
            let target = request.uri().path_and_query().map_or(1, |p| p.as_str().len());
            // "GET /path HTTP/1.1\r\n", the headers, "\r\n"
            (request.method().as_str().len() + 1 + target + 11) as u64 + headers_length(request.headers()) + 2
        } else {
            0
        };
        Self { format, headers, head_length }
    }
}

fn uses_any(format: &LogFormat, variables: &[LogVariable]) -> bool {
    variables.iter().any(|variable| format.uses(variable))
}

/// The values of `names` in `headers`, each tagged with its name's index.
fn captured(names: &[http::HeaderName], headers: &HeaderMap) -> Vec<(usize, HeaderValue)> {
    let mut values = Vec::new();
    for (i, name) in names.iter().enumerate() {
        values.extend(headers.get_all(name).iter().map(|value| (i, value.clone())));
    }
    values
}

/// The length of `headers` as HTTP/1.1 sends them (`name: value\r\n` each).
fn headers_length(headers: &HeaderMap) -> u64 {
    headers.iter().map(|(name, value)| (name.as_str().len() + value.len() + 4) as u64).sum()
}

impl Line {
    /// The line's part of a finished request: the response head, the connection, and what
    /// the request's handling learnt (`trace`).
    pub(crate) fn new<B>(
        request: LineRequest,
        version: Version,
        response: &Response<B>,
        connection: &ConnectionInfo,
        trace: &mut Trace,
        output: AccessLogOutput,
    ) -> Self {
        let format = &request.format;
        let response_headers = captured(format.response_headers(), response.headers());
        let response_head_length = if format.uses(&LogVariable::BytesSent) {
            let reason = response.status().canonical_reason().unwrap_or("").len();
            // "HTTP/1.1 200 OK\r\n", the headers, "\r\n"
            (9 + 4 + reason + 2) as u64 + headers_length(response.headers()) + 2
        } else {
            0
        };
        let ssl = [LogVariable::SslProtocol, LogVariable::SslCipher, LogVariable::SslServerName];
        let tls = connection.tls.as_ref().filter(|_| uses_any(format, &ssl)).map(|tls| TlsParameters {
            version: tls.version,
            cipher_suite: tls.cipher_suite,
            server_name: tls.server_name.clone(),
        });
        Self {
            request,
            version,
            response_headers,
            response_head_length,
            client_ip: trace.client(connection).ip.clone(),
            is_tls: connection.is_tls,
            tls,
            upstream_started: trace.upstream_started,
            upstream_status: trace.upstream_status,
            names: trace.upstream_names.take(),
            output,
        }
    }

    /// Renders the line for `entry` and writes it.
    pub(crate) fn write(&self, entry: &AccessEntry, bytes_out: u64) {
        thread_local! {
            static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
        }
        BUFFER.with(|buffer| {
            let Ok(mut buffer) = buffer.try_borrow_mut() else { return };
            buffer.clear();
            self.render(entry, bytes_out, SystemTime::now(), &mut buffer);
            buffer.push(b'\n');
            self.output.write_line(&buffer);
            // One very long line does not keep its memory for good.
            if buffer.capacity() > 64 * 1024 {
                *buffer = Vec::with_capacity(1024);
            }
        });
    }

    fn render(&self, entry: &AccessEntry, bytes_out: u64, now: SystemTime, out: &mut Vec<u8>) {
        let format = &self.request.format;
        let escape = format.escape();
        for part in format.parts() {
            let variable = match part {
                LogPart::Text(text) => {
                    out.extend_from_slice(text.as_bytes());
                    continue;
                }
                LogPart::Variable(variable) => variable,
            };
            let mut value = Value { out, escape };
            self.variable(variable, entry, bytes_out, now, &mut value);
        }
    }

    /// Writes one variable's value; a variable without one is written as missing.
    fn variable(
        &self,
        variable: &LogVariable,
        entry: &AccessEntry,
        bytes_out: u64,
        now: SystemTime,
        value: &mut Value<'_>,
    ) {
        let uri = &entry.uri;
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        match variable {
            LogVariable::RemoteAddr => value.bytes(self.client_ip.as_bytes()),
            LogVariable::RemotePort => value.number(entry.client.port()),
            LogVariable::RemoteUser => match self.remote_user() {
                Some((user, len)) => value.bytes(&user[..len]),
                None => value.missing(),
            },
            LogVariable::TimeLocal => value.raw(|out| write_time(out, now, TimeStyle::Local)),
            LogVariable::TimeIso8601 => value.raw(|out| write_time(out, now, TimeStyle::Iso8601)),
            LogVariable::Msec => {
                let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
                value.raw(|out| seconds(out, since));
            }
            LogVariable::Request => {
                value.bytes(entry.method.as_str().as_bytes());
                value.bytes(b" ");
                value.bytes(path_and_query.as_bytes());
                value.bytes(b" ");
                value.bytes(protocol(self.version).as_bytes());
            }
            LogVariable::RequestMethod => value.bytes(entry.method.as_str().as_bytes()),
            LogVariable::RequestUri => value.bytes(path_and_query.as_bytes()),
            LogVariable::Uri => value.bytes(uri.path().as_bytes()),
            LogVariable::Args => value.optional(uri.query().map(str::as_bytes)),
            LogVariable::IsArgs => {
                value.bytes(if uri.query().is_some_and(|q| !q.is_empty()) { b"?" } else { b"" })
            }
            LogVariable::Argument(name) => {
                let found = uri.query().unwrap_or("").split('&').find_map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    key.eq_ignore_ascii_case(name).then_some(value)
                });
                value.optional(found.map(str::as_bytes));
            }
            LogVariable::ServerProtocol => value.bytes(protocol(self.version).as_bytes()),
            LogVariable::Scheme => value.bytes(if self.is_tls { b"https" } else { b"http" }),
            LogVariable::Https => value.bytes(if self.is_tls { b"on" } else { b"" }),
            LogVariable::SslProtocol => {
                let version = self.tls.as_ref().and_then(|tls| tls.version);
                value.optional(version.and_then(|v| v.as_str()).map(openssl_version).map(str::as_bytes));
            }
            LogVariable::SslCipher => {
                let suite = self.tls.as_ref().and_then(|tls| tls.cipher_suite);
                value.optional(suite.and_then(openssl_cipher).map(str::as_bytes));
            }
            LogVariable::SslServerName => {
                let name = self.tls.as_ref().and_then(|tls| tls.server_name.as_deref());
                value.optional(name.map(str::as_bytes));
            }
            LogVariable::Host => {
                let authority = uri.authority().map(|a| a.as_str());
                let authority = authority.or_else(|| entry.host.as_ref().and_then(|h| h.to_str().ok()));
                match authority.and_then(ostium_model::normalize_host) {
                    Some(host) => value.bytes(host.as_str().as_bytes()),
                    // nginx falls back on the server's name, `_` for the catch-all server.
                    None => value.bytes(b"_"),
                }
            }
            LogVariable::Status => value.number(entry.status),
            LogVariable::BodyBytesSent => value.number(bytes_out),
            LogVariable::BytesSent => value.number(self.response_head_length + bytes_out),
            LogVariable::RequestLength => {
                let body = entry.bytes_in.as_ref().map_or(0, |b| b.load(Ordering::Relaxed));
                value.number(self.request.head_length + body);
            }
            LogVariable::RequestTime => value.raw(|out| seconds(out, entry.started.elapsed())),
            LogVariable::RequestId => value.optional(entry.request_id.as_ref().map(HeaderValue::as_bytes)),
            LogVariable::UpstreamAddr => match entry.upstream {
                Some(addr) => value.bytes(AddressText::new(addr).as_str().as_bytes()),
                None => value.missing(),
            },
            LogVariable::UpstreamStatus => match self.upstream_status {
                Some(status) => value.number(status),
                None => value.missing(),
            },
            LogVariable::UpstreamResponseTime => {
                // An endpoint that answered took until its body is done (the body streams on
                // to the client, as nginx's with proxy_buffering off); one that failed, till then.
                let answered = self.upstream_started.filter(|_| self.upstream_status.is_some());
                match answered.map(|started| started.elapsed()).or(entry.upstream_duration) {
                    Some(took) => value.raw(|out| seconds(out, took)),
                    None => value.missing(),
                }
            }
            LogVariable::UpstreamHeaderTime => match entry.upstream_duration {
                Some(took) => value.raw(|out| seconds(out, took)),
                None => value.missing(),
            },
            LogVariable::UpstreamResponseLength => match self.upstream_status {
                Some(_) => value.number(bytes_out),
                None => value.missing(),
            },
            LogVariable::ProxyUpstreamName => match &self.names {
                Some(names) => value.upstream_name(&names.service, &names.port),
                // ingress-nginx's name for the default backend.
                None => value.bytes(b"upstream-default-backend"),
            },
            LogVariable::ProxyAlternativeUpstreamName => {
                if let Some((service, port)) = self.names.as_ref().and_then(|n| n.canary.as_ref()) {
                    value.upstream_name(service, port);
                }
            }
            LogVariable::Namespace => {
                value.bytes(entry.ingress.as_ref().map_or("", |i| &*i.namespace).as_bytes())
            }
            LogVariable::IngressName => {
                value.bytes(entry.ingress.as_ref().map_or("", |i| &*i.name).as_bytes())
            }
            LogVariable::ServiceName => {
                value.bytes(self.names.as_ref().map_or("", |n| &*n.service.name).as_bytes())
            }
            LogVariable::ServicePort => {
                if let Some(names) = &self.names {
                    value.display(&names.port);
                }
            }
            LogVariable::RequestHeader(slot) => value.joined(&self.request.headers, *slot),
            LogVariable::ResponseHeader(slot) => value.joined(&self.response_headers, *slot),
            LogVariable::Withheld(_) | LogVariable::Unknown(_) => value.missing(),
        }
    }

    /// `$remote_user`: the user name of `Authorization: Basic`, decoded on the stack.
    fn remote_user(&self) -> Option<([u8; 192], usize)> {
        let slot = self.request.format.request_headers().iter().position(|h| h == header::AUTHORIZATION)?;
        let (_, value) = self.request.headers.iter().find(|(i, _)| *i == slot)?;
        let value = value.as_bytes();
        let space = value.iter().position(|&b| b == b' ')?;
        if !value[..space].eq_ignore_ascii_case(b"basic") {
            return None;
        }
        let mut decoded = [0u8; 192];
        let len = base64::engine::general_purpose::STANDARD
            .decode_slice(value[space + 1..].trim_ascii(), &mut decoded)
            .ok()?;
        let user = decoded[..len].iter().position(|&b| b == b':').unwrap_or(len);
        Some((decoded, user))
    }
}

/// One variable's value on its way into the line, escaped as the format says.
struct Value<'a> {
    out: &'a mut Vec<u8>,
    escape: LogEscape,
}

impl Value<'_> {
    /// A value from the request or elsewhere outside ostium: escaped.
    fn bytes(&mut self, value: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        match self.escape {
            // Not even unescaped may a value end the line: a client could forge the next one.
            LogEscape::None => {
                self.out.extend(value.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }))
            }
            // nginx's `ngx_http_log_escape`.
            LogEscape::Default => {
                for &byte in value {
                    if !(0x20..0x7f).contains(&byte) || byte == b'"' || byte == b'\\' {
                        let hex = [b'\\', b'x', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]];
                        self.out.extend_from_slice(&hex);
                    } else {
                        self.out.push(byte);
                    }
                }
            }
            // nginx's `ngx_escape_json`: bytes from 0x20 up pass, UTF-8 included.
            LogEscape::Json => {
                for &byte in value {
                    match byte {
                        b'"' | b'\\' => self.out.extend_from_slice(&[b'\\', byte]),
                        b'\n' => self.out.extend_from_slice(b"\\n"),
                        b'\r' => self.out.extend_from_slice(b"\\r"),
                        b'\t' => self.out.extend_from_slice(b"\\t"),
                        0x08 => self.out.extend_from_slice(b"\\b"),
                        0x0c => self.out.extend_from_slice(b"\\f"),
                        0..0x20 => {
                            let hex = [
                                b'\\',
                                b'u',
                                b'0',
                                b'0',
                                HEX[usize::from(byte >> 4)],
                                HEX[usize::from(byte & 0xf)],
                            ];
                            self.out.extend_from_slice(&hex);
                        }
                        _ => self.out.push(byte),
                    }
                }
            }
        }
    }

    /// A value ostium writes itself, which needs no escaping (numbers, times).
    fn raw(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(self.out)
    }

    fn number(&mut self, number: impl itoa::Integer) {
        self.out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
    }

    fn display(&mut self, value: impl fmt::Display) {
        // Addresses and port names are ASCII without quotes or backslashes.
        let _ = write!(self.out, "{value}");
    }

    /// No value: nginx writes `-`, or nothing when escaping as JSON or not at all.
    fn missing(&mut self) {
        if self.escape == LogEscape::Default {
            self.out.push(b'-');
        }
    }

    fn optional(&mut self, value: Option<&[u8]>) {
        match value {
            Some(value) => self.bytes(value),
            None => self.missing(),
        }
    }

    /// The kept values of header `slot`, joined as nginx joins a repeated header.
    fn joined(&mut self, values: &[(usize, HeaderValue)], slot: usize) {
        let mut found = false;
        for (_, value) in values.iter().filter(|(i, _)| *i == slot) {
            if found {
                self.bytes(b", ");
            }
            self.bytes(value.as_bytes());
            found = true;
        }
        if !found {
            self.missing();
        }
    }

    /// ingress-nginx's upstream name: `namespace-service-port`.
    fn upstream_name(&mut self, service: &NamespacedName, port: &PortRef) {
        self.bytes(service.namespace.as_bytes());
        self.bytes(b"-");
        self.bytes(service.name.as_bytes());
        self.bytes(b"-");
        self.display(port);
    }
}

/// OpenSSL's name of a TLS version (rustls says `TLSv1_3`).
fn openssl_version(rustls_name: &'static str) -> &'static str {
    match rustls_name {
        "TLSv1_2" => "TLSv1.2",
        "TLSv1_3" => "TLSv1.3",
        other => other,
    }
}

/// OpenSSL's name of a cipher suite rustls offers, as nginx logs it.
fn openssl_cipher(suite: rustls::CipherSuite) -> Option<&'static str> {
    use rustls::CipherSuite as Suite;
    Some(match suite {
        Suite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        Suite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        Suite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        Suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        Suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        Suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        Suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        Suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        Suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => return None,
    })
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Seconds to the millisecond, as nginx writes times (`0.004`).
fn seconds(out: &mut Vec<u8>, duration: Duration) {
    out.extend_from_slice(itoa::Buffer::new().format(duration.as_secs()).as_bytes());
    let millis = duration.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
    ]);
}

enum TimeStyle {
    /// `26/Nov/2026:19:21:23 +0000`
    Local,
    /// `2026-11-26T19:21:23+00:00`
    Iso8601,
}

/// The time in UTC (ostium reads no time zone database; containers run in UTC).
fn write_time(out: &mut Vec<u8>, now: SystemTime, style: TimeStyle) {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (hour, minute, second) = (day_secs / 3600, day_secs % 3600 / 60, day_secs % 60);
    let (year, month, day) = civil_from_days(days);
    let _ = match style {
        TimeStyle::Local => write!(
            out,
            "{day:02}/{}/{year}:{hour:02}:{minute:02}:{second:02} +0000",
            MONTHS[(month - 1) as usize]
        ),
        TimeStyle::Iso8601 => {
            write!(out, "{year}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}+00:00")
        }
    };
}

/// A socket address as `Display` writes it, on the stack, and IPv4 ones without the formatting
/// machinery: an access log line has two.
pub(crate) struct AddressText {
    bytes: [u8; 64],
    len: usize,
}

impl AddressText {
    pub(crate) fn new(address: SocketAddr) -> Self {
        let mut text = Self { bytes: [0; 64], len: 0 };
        match address {
            SocketAddr::V4(address) => {
                let mut digits = itoa::Buffer::new();
                for (i, octet) in address.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(".");
                    }
                    text.push(digits.format(octet));
                }
                text.push(":");
                text.push(digits.format(address.port()));
            }
            // At most 58 bytes: `[` 39 `%` 10 `]:` 5.
            SocketAddr::V6(_) => {
                let _ = fmt::Write::write_fmt(&mut text, format_args!("{address}"));
            }
        }
        text
    }

    fn push(&mut self, part: &str) -> bool {
        let Some(room) = self.bytes.get_mut(self.len..self.len + part.len()) else { return false };
        room.copy_from_slice(part.as_bytes());
        self.len += part.len();
        true
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl fmt::Display for AddressText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Write for AddressText {
    fn write_str(&mut self, part: &str) -> fmt::Result {
        self.push(part).then_some(()).ok_or(fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(escape: LogEscape, input: &[u8]) -> String {
        let mut out = Vec::new();
        Value { out: &mut out, escape }.bytes(input);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn times_are_seconds_to_the_millisecond() {
        for (duration, text) in [(0, "0.000"), (4, "0.004"), (61_500, "61.500"), (1_234_567, "1234.567")] {
            let mut out = Vec::new();
            seconds(&mut out, Duration::from_millis(duration));
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn address_text_is_what_display_writes() {
        let addresses = [
            "0.0.0.0:0",
            "127.0.0.1:8080",
            "255.255.255.255:65535",
            "10.20.30.4:443",
            "[::1]:80",
            "[::ffff:192.0.2.1]:1",
            "[2001:db8::8:800:200c:417a]:65535",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535",
        ];
        for address in addresses {
            let address: SocketAddr = address.parse().unwrap();
            assert_eq!(AddressText::new(address).as_str(), address.to_string());
        }
    }

    #[test]
    fn default_escaping_is_nginx_hex() {
        assert_eq!(
            escaped(LogEscape::Default, b"a \"b\" \\ \t\x7f\xc3\xa9"),
            r#"a \x22b\x22 \x5C \x09\x7F\xC3\xA9"#
        );
    }

    #[test]
    fn json_escaping_keeps_utf8() {
        assert_eq!(
            escaped(LogEscape::Json, "a \"b\" \\ \t\n\x01é".as_bytes()),
            "a \\\"b\\\" \\\\ \\t\\n\\u0001é"
        );
    }

    #[test]
    fn no_escaping_writes_bytes_as_they_are() {
        assert_eq!(escaped(LogEscape::None, b"a \"b\"\t"), "a \"b\"\t");
    }

    #[test]
    fn missing_values_are_a_dash_only_with_default_escaping() {
        for (escape, expected) in [(LogEscape::Default, "-"), (LogEscape::Json, ""), (LogEscape::None, "")] {
            let mut out = Vec::new();
            Value { out: &mut out, escape }.missing();
            assert_eq!(out, expected.as_bytes());
        }
    }

    #[test]
    fn times_are_written_as_nginx_writes_them() {
        // 2024-02-29T23:59:07Z
        let now = UNIX_EPOCH + Duration::from_secs(1_709_251_147);
        let mut out = Vec::new();
        write_time(&mut out, now, TimeStyle::Local);
        out.push(b' ');
        write_time(&mut out, now, TimeStyle::Iso8601);
        out.push(b' ');
        seconds(&mut out, Duration::from_millis(1_709_251_147_042));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "29/Feb/2024:23:59:07 +0000 2024-02-29T23:59:07+00:00 1709251147.042"
        );
    }
}
