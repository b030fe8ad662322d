//! The access log's global settings (the `--configmap` keys `disable-access-log`,
//! `skip-access-log-urls`, `enable-access-log-for-default-backend`, `log-format-upstream`,
//! `log-format-escape-json` and `log-format-escape-none`). A `log-format-upstream` template is
//! parsed once, at translation, into text and [`LogVariable`]s, which the proxy fills per request;
//! nothing else of the template is ever interpreted. Credentials are never logged: variables that
//! would read them (`$http_authorization`, `$http_cookie`, `$cookie_<name>` …) stay empty.

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, header};

/// The access log settings of a table; `Default` is ingress-nginx's defaults, except that
/// without a `log-format-upstream` the proxy writes its own structured event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// `disable-access-log`: no request is logged, whatever its route says.
    pub disabled: bool,
    /// `skip-access-log-urls`: request URIs (path and query, as the client sent them) that are
    /// not logged, compared whole and ASCII case-insensitively (nginx's `map $request_uri`).
    pub skip_urls: Box<[Box<str>]>,
    /// `enable-access-log-for-default-backend`: requests no route takes are logged too.
    pub default_backend: bool,
    /// `log-format-upstream`: every line is this template filled in; `None` writes the
    /// structured event on `ostium::access` instead.
    pub format: Option<Arc<LogFormat>>,
}

impl AccessLogSettings {
    /// Whether a request for `request_uri` is left out (`skip-access-log-urls`).
    pub fn skips(&self, request_uri: &str) -> bool {
        self.skip_urls.iter().any(|url| url.eq_ignore_ascii_case(request_uri))
    }
}

/// A `log-format-upstream` template: text and variables, with its escaping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFormat {
    parts: Box<[LogPart]>,
    escape: LogEscape,
    /// The request headers its variables read, each once; [`LogVariable::RequestHeader`]
    /// indexes this list.
    request_headers: Box<[HeaderName]>,
    /// The response headers its variables read; [`LogVariable::ResponseHeader`] indexes it.
    response_headers: Box<[HeaderName]>,
}

/// A piece of a [`LogFormat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogPart {
    Text(Box<str>),
    Variable(LogVariable),
}

/// How variable values are written (nginx's `log_format … escape=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogEscape {
    /// `"`, `\`, control bytes and bytes from 0x7f up as `\xHH`; a missing value is `-`.
    #[default]
    Default,
    /// `log-format-escape-json`: as a JSON string's content; a missing value is empty.
    Json,
    /// `log-format-escape-none`: as they are; a missing value is empty.
    None,
}

/// An nginx variable of a log format, as ostium knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogVariable {
    /// `$remote_addr`: the client address (as sent upstream in `X-Real-IP`).
    RemoteAddr,
    /// `$remote_port`.
    RemotePort,
    /// `$remote_user`: the user name of `Authorization: Basic`.
    RemoteUser,
    /// `$time_local`: `26/Nov/2026:19:21:23 +0000`.
    TimeLocal,
    /// `$time_iso8601`: `2026-11-26T19:21:23+00:00`.
    TimeIso8601,
    /// `$msec`: seconds since the epoch, to the millisecond.
    Msec,
    /// `$request`: `GET /path?query HTTP/1.1`.
    Request,
    /// `$request_method`.
    RequestMethod,
    /// `$request_uri`: path and query as the client sent them.
    RequestUri,
    /// `$uri`, `$document_uri`: the path as the client sent it.
    Uri,
    /// `$args`, `$query_string`.
    Args,
    /// `$is_args`: `?` when there is a query.
    IsArgs,
    /// `$arg_<name>`: a query parameter.
    Argument(Box<str>),
    /// `$server_protocol`: `HTTP/1.1`, `HTTP/2.0`.
    ServerProtocol,
    /// `$scheme`.
    Scheme,
    /// `$https`: `on` over TLS.
    Https,
    /// `$ssl_protocol`: `TLSv1.2`, `TLSv1.3`.
    SslProtocol,
    /// `$ssl_cipher`: the cipher suite's OpenSSL name.
    SslCipher,
    /// `$ssl_server_name`: the SNI name.
    SslServerName,
    /// `$host`: the host asked for, lower-case, without port.
    Host,
    /// `$status`.
    Status,
    /// `$body_bytes_sent`.
    BodyBytesSent,
    /// `$bytes_sent`: the body and the response head as HTTP/1.1 would send it.
    BytesSent,
    /// `$request_length`: the request head as HTTP/1.1 would send it, and the body read.
    RequestLength,
    /// `$request_time`: seconds, to the millisecond, until the response body was done.
    RequestTime,
    /// `$req_id`: the request's `X-Request-ID`.
    RequestId,
    /// `$upstream_addr`.
    UpstreamAddr,
    /// `$upstream_status`.
    UpstreamStatus,
    /// `$upstream_response_time`: seconds from sending the request to the endpoint to the end
    /// of its response (to its failure, when it failed).
    UpstreamResponseTime,
    /// `$upstream_header_time`: seconds to the endpoint's response head.
    UpstreamHeaderTime,
    /// `$upstream_response_length`.
    UpstreamResponseLength,
    /// `$proxy_upstream_name`: `namespace-service-port` of the route's Service.
    ProxyUpstreamName,
    /// `$proxy_alternative_upstream_name`: the canary's, when the canary took the request.
    ProxyAlternativeUpstreamName,
    /// `$namespace`: the Ingress's.
    Namespace,
    /// `$ingress_name`.
    IngressName,
    /// `$service_name`.
    ServiceName,
    /// `$service_port`.
    ServicePort,
    /// `$http_<name>`: a request header (several joined with `, `); an index into
    /// [`LogFormat::request_headers`].
    RequestHeader(usize),
    /// `$sent_http_<name>`: a response header; an index into [`LogFormat::response_headers`].
    ResponseHeader(usize),
    /// A variable that would log credentials (`Authorization`, `Proxy-Authorization`,
    /// `Cookie` and its `$cookie_<name>`): always missing.
    Withheld(Box<str>),
    /// A variable ostium does not know: always missing.
    Unknown(Box<str>),
}

/// Why a `log-format-upstream` value cannot be a log format (nginx would refuse it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLogFormat {
    #[error("the format is empty")]
    Empty,
    #[error("a `$` is not followed by a variable name")]
    MissingName,
    #[error("the closing bracket of `${{{0}` is missing")]
    UnclosedBracket(String),
    #[error("a `'` ends the quoted format early")]
    StrayQuote,
}

// === impl LogFormat ===

impl LogFormat {
    /// Parses `template` as nginx parses `log_format upstreaminfo '<template>'` (ingress-nginx's
    /// nginx.tmpl): the quoted string's backslash escapes, then text and `$name` or `${name}`
    /// variables. Returns the format and the variables that are always missing: those ostium
    /// does not know (nginx would refuse them) and those it withholds.
    pub fn parse(template: &str, escape: LogEscape) -> Result<(Self, Vec<LogVariable>), InvalidLogFormat> {
        let template = unquote(template)?;
        if template.is_empty() {
            return Err(InvalidLogFormat::Empty);
        }
        let mut format = Builder::default();
        let mut unknown = Vec::new();
        let mut rest = template.as_str();
        while let Some(dollar) = rest.find('$') {
            format.text(&rest[..dollar]);
            rest = &rest[dollar + 1..];
            let bracketed = rest.starts_with('{');
            if bracketed {
                rest = &rest[1..];
            }
            let len = rest.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
            let name = rest[..len].to_ascii_lowercase();
            rest = &rest[len..];
            if bracketed {
                rest =
                    rest.strip_prefix('}').ok_or_else(|| InvalidLogFormat::UnclosedBracket(name.clone()))?;
            }
            if name.is_empty() {
                return Err(InvalidLogFormat::MissingName);
            }
            let variable = format.variable(&name);
            if matches!(variable, LogVariable::Unknown(_) | LogVariable::Withheld(_)) {
                unknown.push(variable.clone());
            }
            format.parts.push(LogPart::Variable(variable));
        }
        format.text(rest);
        let Builder { parts, request_headers, response_headers } = format;
        let format = Self {
            parts: parts.into(),
            escape,
            request_headers: request_headers.into(),
            response_headers: response_headers.into(),
        };
        Ok((format, unknown))
    }

    pub fn parts(&self) -> &[LogPart] {
        &self.parts
    }

    pub fn escape(&self) -> LogEscape {
        self.escape
    }

    /// The request headers to keep for the line, in the order [`LogVariable::RequestHeader`]
    /// counts them.
    pub fn request_headers(&self) -> &[HeaderName] {
        &self.request_headers
    }

    /// The response headers to keep for the line ([`LogVariable::ResponseHeader`]).
    pub fn response_headers(&self) -> &[HeaderName] {
        &self.response_headers
    }

    /// Whether a variable of the format is `$name` (a cost only some formats pay).
    pub fn uses(&self, wanted: &LogVariable) -> bool {
        self.parts.iter().any(|part| matches!(part, LogPart::Variable(variable) if variable == wanted))
    }
}

/// The date (year, month, day) of a day counted from 1970-01-01, for log lines' times (Howard
/// Hinnant's `civil_from_days`).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Undoes nginx's escapes in a quoted configuration string (`\"`, `\'`, `\\`, `\t`, `\r`, `\n`);
/// an unescaped `'` would end the string nginx.tmpl quotes the format in.
fn unquote(template: &str) -> Result<String, InvalidLogFormat> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => return Err(InvalidLogFormat::StrayQuote),
            '\\' => match chars.clone().next() {
                Some(next @ ('"' | '\'' | '\\')) => {
                    chars.next();
                    out.push(next);
                }
                Some('t') | Some('r') | Some('n') => {
                    let next = chars.next();
                    out.push(match next {
                        Some('t') => '\t',
                        Some('r') => '\r',
                        _ => '\n',
                    });
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Builder {
    parts: Vec<LogPart>,
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
}

impl Builder {
    fn text(&mut self, text: &str) {
        if !text.is_empty() {
            self.parts.push(LogPart::Text(text.into()));
        }
    }

    fn variable(&mut self, name: &str) -> LogVariable {
        let header = |prefix: &str| {
            let name = name.strip_prefix(prefix).filter(|n| !n.is_empty())?;
            HeaderName::from_bytes(name.replace('_', "-").as_bytes()).ok()
        };
        let credentials = [header::AUTHORIZATION, header::PROXY_AUTHORIZATION, header::COOKIE];
        let reads_credentials = [header("http_"), header("sent_http_")]
            .iter()
            .any(|h| h.as_ref().is_some_and(|h| credentials.contains(h)));
        if reads_credentials || name.starts_with("cookie_") {
            return LogVariable::Withheld(name.into());
        }
        if let Some(header) = header("http_") {
            return LogVariable::RequestHeader(slot(&mut self.request_headers, header));
        }
        if let Some(header) = header("sent_http_") {
            return LogVariable::ResponseHeader(slot(&mut self.response_headers, header));
        }
        if let Some(argument) = name.strip_prefix("arg_").filter(|n| !n.is_empty()) {
            return LogVariable::Argument(argument.into());
        }
        match name {
            "remote_addr" => LogVariable::RemoteAddr,
            "remote_port" => LogVariable::RemotePort,
            "remote_user" => {
                slot(&mut self.request_headers, header::AUTHORIZATION);
                LogVariable::RemoteUser
            }
            "time_local" => LogVariable::TimeLocal,
            "time_iso8601" => LogVariable::TimeIso8601,
            "msec" => LogVariable::Msec,
            "request" => LogVariable::Request,
            "request_method" => LogVariable::RequestMethod,
            "request_uri" => LogVariable::RequestUri,
            "uri" | "document_uri" => LogVariable::Uri,
            "args" | "query_string" => LogVariable::Args,
            "is_args" => LogVariable::IsArgs,
            "server_protocol" => LogVariable::ServerProtocol,
            "scheme" => LogVariable::Scheme,
            "https" => LogVariable::Https,
            "ssl_protocol" => LogVariable::SslProtocol,
            "ssl_cipher" => LogVariable::SslCipher,
            "ssl_server_name" => LogVariable::SslServerName,
            "host" => LogVariable::Host,
            "status" => LogVariable::Status,
            "body_bytes_sent" => LogVariable::BodyBytesSent,
            "bytes_sent" => LogVariable::BytesSent,
            "request_length" => LogVariable::RequestLength,
            "request_time" => LogVariable::RequestTime,
            "req_id" => LogVariable::RequestId,
            "upstream_addr" => LogVariable::UpstreamAddr,
            "upstream_status" => LogVariable::UpstreamStatus,
            "upstream_response_time" => LogVariable::UpstreamResponseTime,
            "upstream_header_time" => LogVariable::UpstreamHeaderTime,
            "upstream_response_length" => LogVariable::UpstreamResponseLength,
            "proxy_upstream_name" => LogVariable::ProxyUpstreamName,
            "proxy_alternative_upstream_name" => LogVariable::ProxyAlternativeUpstreamName,
            "namespace" => LogVariable::Namespace,
            "ingress_name" => LogVariable::IngressName,
            "service_name" => LogVariable::ServiceName,
            "service_port" => LogVariable::ServicePort,
            name => LogVariable::Unknown(name.into()),
        }
    }
}

/// The index of `header` in `headers`, added when missing.
fn slot(headers: &mut Vec<HeaderName>, header: HeaderName) -> usize {
    headers.iter().position(|h| *h == header).unwrap_or_else(|| {
        headers.push(header);
        headers.len() - 1
    })
}

impl fmt::Display for LogFormat {
    /// The template again, variables as `${name}`, text as it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                LogPart::Text(text) => f.write_str(text)?,
                LogPart::Variable(variable) => {
                    let header = |names: &[HeaderName], i: usize| names[i].as_str().replace('-', "_");
                    match variable {
                        LogVariable::RequestHeader(i) => {
                            write!(f, "${{http_{}}}", header(&self.request_headers, *i))?
                        }
                        LogVariable::ResponseHeader(i) => {
                            write!(f, "${{sent_http_{}}}", header(&self.response_headers, *i))?
                        }
                        variable => write!(f, "${{{}}}", variable.name())?,
                    }
                }
            }
        }
        Ok(())
    }
}

// === impl LogVariable ===

impl LogVariable {
    /// nginx's name of the variable (without `$`); for `$http_…` and `$sent_http_…` only the
    /// prefix (the header is the [`LogFormat`]'s to name).
    pub fn name(&self) -> std::borrow::Cow<'_, str> {
        let name = match self {
            Self::RemoteAddr => "remote_addr",
            Self::RemotePort => "remote_port",
            Self::RemoteUser => "remote_user",
            Self::TimeLocal => "time_local",
            Self::TimeIso8601 => "time_iso8601",
            Self::Msec => "msec",
            Self::Request => "request",
            Self::RequestMethod => "request_method",
            Self::RequestUri => "request_uri",
            Self::Uri => "uri",
            Self::Args => "args",
            Self::IsArgs => "is_args",
            Self::Argument(name) => return format!("arg_{name}").into(),
            Self::ServerProtocol => "server_protocol",
            Self::Scheme => "scheme",
            Self::Https => "https",
            Self::SslProtocol => "ssl_protocol",
            Self::SslCipher => "ssl_cipher",
            Self::SslServerName => "ssl_server_name",
            Self::Host => "host",
            Self::Status => "status",
            Self::BodyBytesSent => "body_bytes_sent",
            Self::BytesSent => "bytes_sent",
            Self::RequestLength => "request_length",
            Self::RequestTime => "request_time",
            Self::RequestId => "req_id",
            Self::UpstreamAddr => "upstream_addr",
            Self::UpstreamStatus => "upstream_status",
            Self::UpstreamResponseTime => "upstream_response_time",
            Self::UpstreamHeaderTime => "upstream_header_time",
            Self::UpstreamResponseLength => "upstream_response_length",
            Self::ProxyUpstreamName => "proxy_upstream_name",
            Self::ProxyAlternativeUpstreamName => "proxy_alternative_upstream_name",
            Self::Namespace => "namespace",
            Self::IngressName => "ingress_name",
            Self::ServiceName => "service_name",
            Self::ServicePort => "service_port",
            Self::RequestHeader(_) => "http_",
            Self::ResponseHeader(_) => "sent_http_",
            Self::Withheld(name) | Self::Unknown(name) => return name.as_ref().into(),
        };
        name.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_and_text_alternate() {
        let (format, unknown) =
            LogFormat::parse("$remote_addr - [${time_local}] \"$http_x_custom\"$status", LogEscape::Default)
                .unwrap();
        assert!(unknown.is_empty());
        assert_eq!(format.request_headers(), [HeaderName::from_static("x-custom")]);
        assert_eq!(
            format.parts(),
            [
                LogPart::Variable(LogVariable::RemoteAddr),
                LogPart::Text(" - [".into()),
                LogPart::Variable(LogVariable::TimeLocal),
                LogPart::Text("] \"".into()),
                LogPart::Variable(LogVariable::RequestHeader(0)),
                LogPart::Text("\"".into()),
                LogPart::Variable(LogVariable::Status),
            ]
        );
        assert_eq!(format.to_string(), "${remote_addr} - [${time_local}] \"${http_x_custom}\"${status}");
    }

    #[test]
    fn names_are_case_insensitive_and_end_at_the_first_other_character() {
        let (format, _) = LogFormat::parse("$Status.$request_time,", LogEscape::Json).unwrap();
        assert_eq!(
            format.parts(),
            [
                LogPart::Variable(LogVariable::Status),
                LogPart::Text(".".into()),
                LogPart::Variable(LogVariable::RequestTime),
                LogPart::Text(",".into()),
            ]
        );
    }

    #[test]
    fn unknown_variables_are_named() {
        let (format, unknown) = LogFormat::parse("$geoip_country_code $status", LogEscape::Default).unwrap();
        assert_eq!(unknown, [LogVariable::Unknown("geoip_country_code".into())]);
        assert_eq!(format.parts()[0], LogPart::Variable(LogVariable::Unknown("geoip_country_code".into())));
    }

    #[test]
    fn credentials_are_withheld() {
        let template =
            "$http_authorization $HTTP_COOKIE $cookie_session $http_proxy_authorization $remote_user";
        let (format, withheld) = LogFormat::parse(template, LogEscape::Default).unwrap();
        let names: Vec<String> = withheld.iter().map(|v| v.name().into_owned()).collect();
        assert_eq!(
            names,
            ["http_authorization", "http_cookie", "cookie_session", "http_proxy_authorization"]
        );
        // `$remote_user` reads the user name alone.
        assert_eq!(format.request_headers(), [header::AUTHORIZATION]);
    }

    #[test]
    fn a_header_read_twice_is_kept_once() {
        let (format, _) = LogFormat::parse("$http_x_a $http_X_A $sent_http_x_a", LogEscape::Default).unwrap();
        assert_eq!(format.request_headers().len(), 1);
        assert_eq!(format.response_headers().len(), 1);
    }

    #[test]
    fn quoted_string_escapes_are_undone() {
        let (format, _) = LogFormat::parse(r#"a\"b\\c\td"#, LogEscape::Default).unwrap();
        assert_eq!(format.parts(), [LogPart::Text("a\"b\\c\td".into())]);
    }

    #[test]
    fn what_nginx_refuses_is_invalid() {
        let parse = |t| LogFormat::parse(t, LogEscape::Default).map(|_| ());
        assert_eq!(parse(""), Err(InvalidLogFormat::Empty));
        assert_eq!(parse("a $ b"), Err(InvalidLogFormat::MissingName));
        assert_eq!(parse("a $"), Err(InvalidLogFormat::MissingName));
        assert_eq!(parse("${status"), Err(InvalidLogFormat::UnclosedBracket("status".into())));
        assert_eq!(parse("it's"), Err(InvalidLogFormat::StrayQuote));
    }

    #[test]
    fn skipped_urls_match_whole_and_ignore_case() {
        let settings = AccessLogSettings { skip_urls: ["/healthz".into()].into(), ..Default::default() };
        assert!(settings.skips("/healthz"));
        assert!(settings.skips("/HEALTHZ"));
        assert!(!settings.skips("/healthz?x=1"));
        assert!(!settings.skips("/healthz/"));
    }
}
