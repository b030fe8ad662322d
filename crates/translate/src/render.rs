//! A stable, readable rendering of a translation: what golden tests compare and `ostium check`
//! prints. Everything is sorted, so equal translations render equally.

use std::fmt::Write;

use ostium_model::{
    AccessLogSettings, Affinity, Backend, BackendTlsSettings, Blocked, Canary, CanaryAffinity,
    ClientAddressing, ClientAuth, ClientLimits, Compression, Credentials, Encoding, ExternalAuth,
    GlobalSettings, HeaderRule, HeaderSettings, HostRule, HttpsRedirect, HttpsSettings, LimitStatuses,
    LoadBalance, LogEscape, MediaTypes, Mirror, MirrorPath, Policy, Protocol, RedirectContext, Route,
    RouteAction, RouteTracing, SameSite, Sampler, ServerTls, SetValue, Shaping, StreamService,
    StreamSettings, Target, TextRewrite, UserAgents,
};

use crate::Translation;

pub(crate) fn render(translation: &Translation) -> String {
    let table = &translation.table;
    let mut out = String::new();

    out.push_str("ingresses:\n");
    for ingress in &translation.ingresses {
        let _ = writeln!(out, "  - {ingress}");
    }

    out.push_str("default:\n");
    match table.default_route_ref() {
        Some(route) => {
            let _ = writeln!(out, "  {}", route_line(route));
        }
        None => out.push_str("  built-in 404\n"),
    }

    out.push_str("tls:\n");
    let _ = writeln!(out, "  default certificate: {}", table.tls().default_certificate().source);
    let mut tls_hosts: Vec<(HostRule, &str)> =
        table.tls().hosts().into_iter().map(|(host, c)| (host, &*c.source)).collect();
    tls_hosts.extend(table.tls().default_hosts().into_iter().map(|host| (host, "default certificate")));
    tls_hosts.sort();
    for (host, source) in tls_hosts {
        let _ = writeln!(out, "  {host}: {source}");
    }
    if let Some(settings) = table.tls().default_server_tls() {
        let _ = writeln!(out, "  every other host's handshake: {}", server_tls_line(settings));
    }
    for (host, settings) in table.tls().server_tls_hosts() {
        let _ = writeln!(out, "  {host} handshake: {}", server_tls_line(settings));
    }
    let passthrough = table.passthrough_hosts();
    if !passthrough.is_empty() {
        out.push_str("passthrough:\n");
        for (host, backend) in passthrough {
            let _ = writeln!(out, "  {host} -> {}", backend_line(backend));
        }
    }

    let mut streams = table.streams().peekable();
    if streams.peek().is_some() {
        out.push_str("streams:\n");
        for stream in streams {
            let _ = writeln!(out, "  {}", stream_line(stream));
        }
    }

    let global = global_lines(table.global());
    if !global.is_empty() {
        out.push_str("global:\n");
        for line in global {
            let _ = writeln!(out, "  {line}");
        }
    }

    out.push_str("hosts:\n");
    for vhost in table.virtual_hosts() {
        let name = vhost.host().map_or_else(|| "(any host)".to_owned(), |h| h.to_string());
        let _ = writeln!(out, "  {name}:");
        let mut routes: Vec<&Route> = vhost.routes().iter().collect();
        routes.sort_by(|a, b| a.rule.cmp(&b.rule));
        for route in routes {
            let _ = writeln!(out, "    {}", route_line(route));
        }
        if let Some(fallback) = vhost.fallback() {
            let _ = writeln!(out, "    fallback {}", route_line(fallback));
        }
        if let Some(client_auth) = vhost.client_auth() {
            let _ = writeln!(out, "    client certificates: {}", client_auth_line(client_auth));
        }
    }

    out.push_str("diagnostics:\n");
    for diagnostic in &translation.diagnostics {
        let _ = writeln!(out, "  - {diagnostic}");
    }
    out
}

/// The `--configmap` settings that differ from the defaults, one line per family (none when
/// all are default, so that translations without a ConfigMap render as before).
fn global_lines(global: &GlobalSettings) -> Vec<String> {
    let GlobalSettings { https, compression, stream, headers, access_log, client_address, client_limits } =
        global;
    let mut lines = Vec::new();
    if *client_limits != ClientLimits::default() {
        let ClientLimits {
            header_timeout,
            body_timeout,
            keepalive_timeout,
            keepalive_requests,
            max_header_bytes,
            http2_max_concurrent_streams,
        } = client_limits;
        lines.push(format!(
            "client limits: header timeout {header_timeout:?}, body timeout {body_timeout:?}, keep-alive {keepalive_timeout:?} for {keepalive_requests} requests, heads up to {max_header_bytes:?} bytes, {http2_max_concurrent_streams} HTTP/2 streams"
        ));
    }
    if *client_address != ClientAddressing::default() {
        lines.push(format!("client address: {}", client_address_line(client_address)));
    }
    if *access_log != AccessLogSettings::default() {
        lines.push(access_log_line(access_log));
    }
    if *headers != HeaderSettings::default() {
        lines.push(format!("headers: {}", header_settings_line(headers)));
    }
    if *https != HttpsSettings::default() {
        let hsts = https.hsts.as_ref().map_or("off", |value| value.to_str().unwrap_or("?"));
        let exempt = https.no_redirect_locations.join(", ");
        lines.push(format!("https: redirect {}, not for [{exempt}]; hsts {hsts}", https.redirect_code));
    }
    if *compression != Compression::default() {
        lines.push(compression_line(compression));
    }
    if *stream != StreamSettings::default() {
        let limit = |limit: Option<String>| limit.unwrap_or_else(|| "no limit".to_owned());
        lines.push(format!(
            "stream: timeout {:?}, next upstream {}, tries {}, next upstream timeout {}, UDP responses {}",
            stream.timeout,
            if stream.next_upstream { "on" } else { "off" },
            limit(stream.next_upstream_tries.map(|n| n.to_string())),
            limit(stream.next_upstream_timeout.map(|t| format!("{t:?}"))),
            limit(stream.responses.map(|n| n.to_string())),
        ));
    }
    lines
}

/// `use-gzip`, `enable-brotli` and their keys.
fn compression_line(compression: &Compression) -> String {
    let defaults = Compression::default();
    let encoding = |name: &str, encoding: &Encoding, default_types: &MediaTypes| {
        if !encoding.enabled {
            return format!("{name} off");
        }
        let types = match &encoding.types {
            types if types == default_types => "default".to_owned(),
            MediaTypes::Any => "*".to_owned(),
            MediaTypes::Listed(types) => types.join(" "),
        };
        format!("{name} level {} from {} bytes, types {types}", encoding.level, encoding.min_length)
    };
    let mut line = format!(
        "compression: {}; {}",
        encoding("gzip", &compression.gzip, &defaults.gzip.types),
        encoding("brotli", &compression.brotli, &defaults.brotli.types)
    );
    match &compression.gzip_disable {
        None => {}
        Some(UserAgents::Msie6) => line.push_str("; no gzip for msie6"),
        Some(UserAgents::Matching(regex)) => {
            let _ = write!(line, "; no gzip for user agents ~* {}", regex.as_str());
        }
    }
    line
}

/// The header settings that differ from ingress-nginx's defaults.
fn header_settings_line(headers: &HeaderSettings) -> String {
    let defaults = HeaderSettings::default();
    let mut parts = Vec::new();
    if !headers.proxy_set_headers.is_empty() {
        let pairs = headers.proxy_set_headers.iter().map(|(name, value)| match value {
            SetValue::Text(text) => format!("{name}: {}", String::from_utf8_lossy(text.as_bytes())),
            SetValue::Template(template) => format!("{name}: {template}"),
        });
        parts.push(format!("to backends [{}]", pairs.collect::<Vec<_>>().join("; ")));
    }
    if !headers.add_headers.is_empty() {
        parts.push(format!("to clients [{}]", header_pairs(&headers.add_headers)));
    }
    if !headers.hide_headers.is_empty() {
        let names: Vec<&str> = headers.hide_headers.iter().map(|name| name.as_str()).collect();
        parts.push(format!("hidden [{}]", names.join(", ")));
    }
    let flags = [
        (headers.server_tokens, defaults.server_tokens, "server tokens"),
        (headers.underscores_in_headers, defaults.underscores_in_headers, "underscores in headers"),
        (headers.ignore_invalid_headers, defaults.ignore_invalid_headers, "invalid headers ignored"),
        (headers.generate_request_id, defaults.generate_request_id, "request ids generated"),
        (headers.original_uri_header, defaults.original_uri_header, "X-Original-URI"),
        (headers.blocks_unusable, false, "every request refused (503): a block list unusable"),
    ];
    for (value, default, what) in flags {
        if value != default {
            parts.push(format!("{what} {}", if value { "on" } else { "off" }));
        }
    }
    for (what, block) in [("user agents", &headers.block_user_agents), ("referers", &headers.block_referers)]
    {
        if let Some(block) = block {
            parts.push(format!("blocked {what} [{}]", block.entries().collect::<Vec<_>>().join(", ")));
        }
    }
    parts.join(", ")
}

/// `disable-access-log`, `skip-access-log-urls`, `enable-access-log-for-default-backend` and
/// `log-format-upstream` with its escaping.
fn access_log_line(settings: &AccessLogSettings) -> String {
    if settings.disabled {
        return "access log: off".to_owned();
    }
    let mut line = "access log:".to_owned();
    match &settings.format {
        Some(format) => {
            let escape = match format.escape() {
                LogEscape::Default => "nginx",
                LogEscape::Json => "json",
                LogEscape::None => "none",
            };
            let _ = write!(line, " format ({escape} escaping) '{format}'");
        }
        None => line.push_str(" event"),
    }
    if !settings.skip_urls.is_empty() {
        let _ = write!(line, ", skipping {}", settings.skip_urls.join(" "));
    }
    if settings.default_backend {
        line.push_str(", default backend included");
    }
    line
}

/// Where client addresses come from, and `block-cidrs`.
fn client_address_line(rules: &ClientAddressing) -> String {
    let trusted = rules.trusted.as_ref().map_or_else(|| "nobody".to_owned(), |set| set.to_string());
    let mut parts = vec![format!("trusting {trusted}")];
    if let Some(proxy_protocol) = &rules.proxy_protocol {
        parts.push(format!("PROXY header within {:?}", proxy_protocol.header_timeout));
    }
    if let Some(forwarded) = &rules.forwarded {
        let mut part = format!("client from {}", forwarded.client_header);
        if forwarded.scheme_and_host {
            part.push_str(" with X-Forwarded-Proto/-Port/-Host");
        }
        if forwarded.full_forwarded_for {
            part.push_str(", X-Forwarded-For appended to");
        }
        parts.push(part);
    }
    match &rules.blocked {
        Some(Blocked::Networks(networks)) => parts.push(format!("blocking {networks}")),
        Some(Blocked::Unreadable) => {
            parts.push("blocking everything (503): block-cidrs unreadable".to_owned())
        }
        None => {}
    }
    parts.join(", ")
}

/// `ssl-ciphers` (TLS 1.2 suites) and `ssl-prefer-server-ciphers` of a host.
fn server_tls_line(settings: &ServerTls) -> String {
    let mut parts = Vec::new();
    if let Some(suites) = &settings.tls12_cipher_suites {
        let names: Vec<String> = suites.iter().map(|suite| format!("{:?}", suite.suite())).collect();
        parts.push(format!("tls1.2 suites {}", names.join(",")));
    }
    if let Some(versions) = settings.versions {
        parts.push(format!("versions {versions:?}"));
    }
    if let Some(groups) = &settings.kx_groups {
        let names: Vec<String> = groups.iter().map(|group| format!("{group:?}")).collect();
        parts.push(format!("groups {}", names.join(",")));
    }
    if settings.session_tickets == Some(true) {
        parts.push("session tickets".to_owned());
    }
    if settings.session_cache == Some(false) {
        parts.push("no session cache".to_owned());
    }
    if let Some(prefer) = settings.prefer_server_ciphers {
        parts.push(format!("prefer server ciphers {}", if prefer { "on" } else { "off" }));
    }
    parts.join(", ")
}

/// What a host asks of client certificates (`auth-tls-*`).
fn client_auth_line(client_auth: &ClientAuth) -> String {
    let ClientAuth::Verify(verify) = client_auth else {
        return "refused: every request answered 403".to_owned();
    };
    let trust = &verify.trust;
    let mut line = format!(
        "verify {} depth {} from {} ({} CA certificate(s), {} CRL(s))",
        verify.mode,
        verify.depth,
        verify.source,
        trust.anchors.len(),
        trust.crls.len()
    );
    if let Some(page) = &verify.error_page {
        let _ = write!(line, ", error page {}", page.to_str().unwrap_or("?"));
    }
    if verify.pass_certificate {
        line.push_str(", certificate passed upstream");
    }
    if let Some(pattern) = &verify.match_cn {
        let _ = write!(line, ", subject must match {pattern}");
    }
    line
}

fn route_line(route: &Route) -> String {
    // Only the default backend comes from a flag rather than an Ingress.
    let from = route
        .ingress
        .as_ref()
        .map_or_else(|| "--default-backend-service".to_owned(), |i| format!("ingress {i}"));
    let action = match &route.action {
        RouteAction::Forward(backend) => backend_line(backend),
        RouteAction::Redirect(to) => format!("redirect 308 to host {}", to.host()),
    };
    format!("{} -> {action} ({from}){}", route.rule, policy_line(&route.policy))
}

/// What a route's policy changes from the default, or nothing.
fn policy_line(policy: &Policy) -> String {
    let mut parts = Vec::new();
    if let Some(denial) = &policy.denied {
        parts.push(format!("denied: {denial}"));
    }
    if policy.max_body_size != Policy::default().max_body_size {
        parts.push(policy.max_body_size.map_or("no body limit".to_owned(), |n| format!("body limit {n}")));
    }
    if let Some(redirect) = &policy.redirect {
        parts.push(format!("redirect {} {}", redirect.status, redirect.location.to_str().unwrap_or("?")));
    }
    if let Some(root) = &policy.app_root {
        parts.push(format!("app root {}", root.to_str().unwrap_or("?")));
    }
    match policy.https_redirect {
        HttpsRedirect::WhenHostHasCertificate => {}
        HttpsRedirect::Never => parts.push("no https redirect".to_owned()),
        HttpsRedirect::Always => parts.push("https redirect always".to_owned()),
    }
    if let Some(auth) = &policy.auth {
        let challenge = auth.challenge.to_str().unwrap_or("?");
        match &auth.credentials {
            Credentials::Users(users) => {
                let mut names: Vec<&str> = users.keys().map(String::as_str).collect();
                names.sort_unstable();
                parts.push(format!("auth {challenge} users {}", names.join(",")));
            }
            Credentials::Deny => parts.push("auth misconfigured: deny (503)".to_owned()),
        }
    }
    if let Some(auth) = &policy.external_auth {
        parts.push(external_auth_line(auth));
    }
    if let Some(access) = &policy.source_access {
        if let Some(allow) = &access.allow {
            parts.push(format!("allow {allow}"));
        }
        if let Some(deny) = &access.deny {
            parts.push(format!("deny {deny}"));
        }
    }
    if let Some(cors) = &policy.cors {
        let expose = cors.expose_headers.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("none");
        parts.push(format!(
            "cors origins {} methods {} headers {} expose {expose} credentials {} max-age {}",
            cors.origins,
            cors.allow_methods.to_str().unwrap_or("?"),
            cors.allow_headers.to_str().unwrap_or("?"),
            cors.allow_credentials,
            cors.max_age.to_str().unwrap_or("?"),
        ));
    }
    if let Some(tls) = &policy.backend_tls {
        parts.push(backend_tls_part(&tls.settings));
    }
    if let Some(host) = &policy.upstream_host {
        parts.push(format!("upstream host {}", host.to_str().unwrap_or("?")));
    }
    if !policy.access_log {
        parts.push("no access log".to_owned());
    }
    if let Some(connect) = policy.upstream_timeouts.connect {
        parts.push(format!("connect timeout {}s", connect.as_secs()));
    }
    if let Some(send) = policy.upstream_timeouts.send {
        parts.push(format!("send timeout {}s", send.as_secs()));
    }
    if let Some(read) = policy.upstream_timeouts.read {
        parts.push(format!("read timeout {}s", read.as_secs()));
    }
    if let Some(limit) = &policy.rate_limit {
        let mut limits = Vec::new();
        for (name, rate) in [("rps", limit.per_second), ("rpm", limit.per_minute)] {
            if let Some(rate) = rate {
                limits.push(format!("{name} {} burst {}", rate.requests, rate.burst));
            }
        }
        if let Some(connections) = limit.connections {
            limits.push(format!("connections {connections}"));
        }
        if let Some(allowlist) = &limit.allowlist {
            limits.push(format!("except {allowlist}"));
        }
        if limit.statuses != LimitStatuses::default() {
            let LimitStatuses { requests, connections } = limit.statuses;
            limits.push(format!("answered {requests} (requests) {connections} (connections)"));
        }
        parts.push(format!("limit {}", limits.join(", ")));
    }
    if let Some(rate) = policy.response_rate {
        parts.push(format!("response rate {} bytes/s after {} bytes", rate.bytes_per_second, rate.after));
    }
    let (next, default_next) = (&policy.next_upstream, ostium_model::NextUpstream::default());
    if (next.conditions, next.non_idempotent) != (default_next.conditions, default_next.non_idempotent) {
        parts.push(format!("next upstream {next}"));
    }
    if next.tries != default_next.tries {
        parts.push(format!("tries {}", next.tries));
    }
    if let Some(timeout) = next.timeout {
        parts.push(format!("next upstream timeout {}s", timeout.as_secs()));
    }
    if !policy.request_buffering {
        parts.push("request buffering off".to_owned());
    }
    if policy.client_body_buffer_size != ostium_model::DEFAULT_CLIENT_BODY_BUFFER_SIZE {
        parts.push(format!("body buffer {}", policy.client_body_buffer_size));
    }
    if policy.satisfy == ostium_model::Satisfy::Any {
        parts.push("satisfy any".to_owned());
    }
    if let Some(rewrite) = &policy.rewrite {
        let prefix = rewrite.forwarded_prefix.as_deref();
        parts.push(format!(
            "rewrite to {}{}",
            rewrite.target,
            prefix.map_or(String::new(), |p| format!(" prefix {p}"))
        ));
    }
    if let Some(backend) = &policy.default_backend {
        parts.push(format!("default backend {}", backend_line(backend)));
    }
    if let Some(pages) = &policy.error_pages {
        let codes: Vec<String> = pages.codes.iter().map(u16::to_string).collect();
        let scope = if pages.intercept_upstream { "" } else { " (proxy errors only)" };
        parts.push(format!("error pages for {}{scope}", codes.join(",")));
    }
    if let Some(affinity) = &policy.affinity {
        parts.push(affinity_part(affinity));
    }
    if let Some(hash) = &policy.upstream_hash {
        let subset = hash.subset_size.map_or(String::new(), |size| format!(" subsets of {size}"));
        parts.push(format!("hash by {}{subset}", hash.key));
    }
    shaping_parts(&policy.shaping, &mut parts);
    if policy.load_balance == LoadBalance::Ewma {
        parts.push("balance ewma".to_owned());
    }
    if let Some(mirror) = &policy.mirror {
        parts.push(mirror_part(mirror));
    }
    if let Some(tracing) = &policy.tracing {
        parts.push(tracing_part(tracing));
    }
    if let Some(canary) = &policy.canary {
        parts.push(canary_part(canary));
    }
    if parts.is_empty() { String::new() } else { format!(" [{}]", parts.join("; ")) }
}

/// `affinity: cookie`: the mode and the cookie as it is written.
fn affinity_part(affinity: &Affinity) -> String {
    let cookie = &affinity.cookie;
    let mut attributes = Vec::new();
    if let Some(expires) = cookie.expires {
        attributes.push(format!("Expires=+{expires}s"));
    }
    if let Some(max_age) = cookie.max_age {
        attributes.push(format!("Max-Age={max_age}"));
    }
    if let Some(domain) = &cookie.domain {
        attributes.push(format!("Domain={domain}"));
    }
    attributes.push(format!("Path={}", cookie.path));
    attributes.push(if cookie.secure { "Secure".into() } else { "Secure on https".into() });
    attributes.push("HttpOnly".into());
    if let Some(same_site) = cookie.same_site {
        let condition = match cookie.conditional_same_site_none && same_site == SameSite::None {
            true => " if the user agent takes it",
            false => "",
        };
        attributes.push(format!("SameSite={same_site}{condition}"));
    }
    let failure = if affinity.change_on_failure { ", changed on failure" } else { "" };
    format!("affinity {} cookie {} ({}){failure}", affinity.mode, cookie.name, attributes.join("; "))
}

/// `enable-opentelemetry`: the span's name, whether an incoming span is its parent, and the
/// export (`otlp-collector-*`, `otel-*`).
fn tracing_part(tracing: &RouteTracing) -> String {
    let export = &tracing.export;
    let sampler = match export.sampler {
        Sampler::AlwaysOn => "always".to_owned(),
        Sampler::AlwaysOff => "never".to_owned(),
        Sampler::TraceIdRatio { bound } => format!("ratio {:.4}", bound as f64 / (1u64 << 63) as f64),
    };
    format!(
        "traced as {} {} incoming spans, to {} as {} sampled {sampler}{} queue {} batch {} every {}ms",
        tracing.operation_name.as_deref().unwrap_or("HTTP <method>"),
        if tracing.trust_incoming_span { "trusting" } else { "ignoring" },
        export.collector,
        export.service_name,
        if export.parent_based { " parent-based" } else { "" },
        export.max_queue_size,
        export.max_export_batch_size,
        export.schedule_delay.as_millis(),
    )
}

/// The canary of a route: its backend and rules, in the order they decide.
fn canary_part(canary: &Canary) -> String {
    let mut part = format!("canary of ingress {} {}", canary.ingress, backend_line(&canary.backend));
    if let Some(header) = &canary.header {
        let rule = match &header.rule {
            HeaderRule::AlwaysOrNever => "always/never".to_owned(),
            HeaderRule::Value(value) => format!("= {}", value.to_str().unwrap_or("?")),
            HeaderRule::Pattern(pattern) => format!("~ {pattern}"),
            HeaderRule::BrokenPattern => "present: main".to_owned(),
        };
        let _ = write!(part, ", header {} {rule}", header.name);
    }
    if let Some(cookie) = &canary.cookie {
        let _ = write!(part, ", cookie {cookie} always/never");
    }
    let _ = write!(part, ", weight {}/{}", canary.weight, canary.weight_total);
    if canary.affinity == CanaryAffinity::Legacy {
        part.push_str(", legacy affinity");
    }
    if let Some(sessions) = &canary.sessions {
        let _ = write!(part, ", sessions by cookie {}", sessions.cookie);
    }
    if canary.load_balance == LoadBalance::Ewma {
        part.push_str(", balance ewma");
    }
    if let Some(hash) = &canary.upstream_hash {
        let _ = write!(part, ", hash by {}", hash.key);
    }
    if let Some(affinity) = &canary.own_affinity {
        let _ = write!(part, ", own {}", affinity_part(affinity));
    }
    part
}

/// `proxy-ssl-*`: the Secret, what is verified and sent, versions and suites.
fn backend_tls_part(tls: &BackendTlsSettings) -> String {
    let mut part = format!("backend tls {}", tls.source);
    match &tls.verify {
        Some(verify) => {
            let _ = write!(part, " verify {} ca depth {}", verify.ca.len(), verify.depth);
        }
        None => part.push_str(" unverified"),
    }
    let _ = write!(part, " name {}", tls.server_name.to_str());
    if tls.send_server_name {
        part.push_str(" sni");
    }
    let versions: Vec<String> = tls.versions.iter().map(|v| format!("{v:?}")).collect();
    let _ = write!(part, " {}", versions.join(","));
    if let Some(suites) = &tls.cipher_suites {
        let suites: Vec<String> = suites.iter().map(|s| format!("{s:?}")).collect();
        let _ = write!(part, " ciphers {}", suites.join(","));
    }
    if let Some(chain) = &tls.client_certificate {
        let _ = write!(part, " client certificate ({} certificates)", chain.len());
    }
    part
}

/// A route's external authentication.
fn external_auth_line(auth: &ExternalAuth) -> String {
    let mut line = format!("external auth {}", auth.url);
    if let Some(method) = &auth.method {
        line.push_str(&format!(" method {method}"));
    }
    if let Some(signin) = &auth.signin {
        line.push_str(&format!(" signin {signin}"));
    }
    if !auth.response_headers.is_empty() {
        let names: Vec<&str> = auth.response_headers.iter().map(|h| h.as_str()).collect();
        line.push_str(&format!(" response headers {}", names.join(",")));
    }
    if !auth.proxy_set_headers.is_empty() {
        let headers: Vec<String> =
            auth.proxy_set_headers.iter().map(|(name, value)| format!("{name}={value}")).collect();
        line.push_str(&format!(" set headers {}", headers.join(",")));
    }
    if let Some(redirect) = &auth.request_redirect {
        line.push_str(&format!(" request redirect {}", redirect.to_str().unwrap_or("?")));
    }
    if let Some(cache) = &auth.cache {
        let validity: Vec<String> = cache
            .validity
            .iter()
            .map(|(codes, duration)| {
                let codes: String = codes.iter().map(|code| format!("{code} ")).collect();
                format!("{codes}{}s", duration.as_secs_f64())
            })
            .collect();
        line.push_str(&format!(" cache key {} for {}", cache.key, validity.join(", ")));
    }
    if auth.always_set_cookie {
        line.push_str(" always set cookie");
    }
    line
}

/// `mirror-*`: where copies go, their `Host`, and whether they carry the body.
fn mirror_part(mirror: &Mirror) -> String {
    let path = match &mirror.path {
        MirrorPath::Fixed(path) => format!("{path} (query kept)"),
        MirrorPath::WithRequestUri(parts) => parts.join("$request_uri"),
    };
    format!(
        "mirror {}://{}{path} host {} body {}",
        mirror.scheme,
        mirror.authority,
        mirror.host.to_str().unwrap_or("?"),
        if mirror.request_body { "on" } else { "off" }
    )
}

/// What a route's shaping changes from the default.
fn shaping_parts(shaping: &Shaping, parts: &mut Vec<String>) {
    if let Some(connection) = &shaping.connection {
        parts.push(format!("upstream connection {}", connection.to_str().unwrap_or("?")));
    }
    if shaping.http_version != Shaping::default().http_version {
        parts.push(format!("upstream {:?}", shaping.http_version));
    }
    let rewrites = [
        ("redirect", &shaping.redirect),
        ("cookie domain", &shaping.cookie_domain),
        ("cookie path", &shaping.cookie_path),
    ];
    for (what, rewrite) in rewrites {
        if let Some(TextRewrite { from, to }) = rewrite {
            parts.push(format!("{what} {from} -> {to}"));
        }
    }
    let flags = [
        (shaping.preserve_trailing_slash, "trailing slash kept"),
        (shaping.port_in_redirects, "port in redirects"),
        (shaping.relative_redirects, "relative redirects"),
        (shaping.rewrite_log, "rewrite log"),
    ];
    parts.extend(flags.into_iter().filter(|(on, _)| *on).map(|(_, text)| text.to_owned()));
    if let Some(headers) = &shaping.custom_headers {
        parts.push(format!("custom headers {}", header_pairs(headers)));
    }
}

/// `name: value` pairs, `;`-separated, values as UTF-8 where they are.
fn header_pairs(headers: &[(http::HeaderName, http::HeaderValue)]) -> String {
    let pairs =
        headers.iter().map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())));
    pairs.collect::<Vec<_>>().join("; ")
}

fn backend_line(backend: &Backend) -> String {
    let protocol = match backend.protocol {
        Protocol::Http => "",
        Protocol::Https => " HTTPS",
        Protocol::Grpc => " GRPC",
        Protocol::Grpcs => " GRPCS",
    };
    let target = match &backend.target {
        Target::Endpoints(set) => {
            let addrs: Vec<String> = set.addrs().iter().map(ToString::to_string).collect();
            format!("endpoints [{}]", addrs.join(", "))
        }
        Target::ClusterIp(set) => {
            let addrs: Vec<String> = set.addrs().iter().map(ToString::to_string).collect();
            format!("cluster IP {}", addrs.join(", "))
        }
        Target::ExternalName(authority) => format!("external name {authority}"),
        Target::Unavailable => "unavailable (503)".to_owned(),
    };
    format!("service {}:{}{protocol} {target}", backend.service, backend.port)
}

/// A TCP or UDP service: its port, the Service port and its endpoints, and the PROXY protocol.
fn stream_line(stream: &StreamService) -> String {
    let addrs: Vec<String> = stream.endpoints.addrs().iter().map(ToString::to_string).collect();
    let mut line = format!(
        "{} {} -> service {}:{} endpoints [{}]",
        stream.protocol,
        stream.port,
        stream.service,
        stream.service_port,
        addrs.join(", ")
    );
    if stream.decode_proxy_protocol {
        line.push_str(", PROXY protocol from clients");
    }
    if stream.send_proxy_protocol {
        line.push_str(", PROXY protocol to endpoints");
    }
    line
}

/// What a request would get, in words.
pub(crate) fn explain(translation: &Translation, host: &str, path: &str, https: bool) -> String {
    let table = &translation.table;
    let mut out = String::new();
    let normal = match ostium_model::normalize_path(path) {
        Ok(normal) => normal,
        Err(e) => return format!("400 Bad Request: {e}\n"),
    };
    let _ = writeln!(out, "request: {} {host}{normal}", if https { "https" } else { "http" });
    if let Some(backend) = table.passthrough(host).filter(|_| https) {
        let _ = writeln!(out, "ssl-passthrough: TLS passed undecrypted to {}", backend_line(backend));
        return out;
    }
    if https {
        let certificate = table.tls().resolve(Some(host));
        let source = table
            .tls()
            .hosts()
            .into_iter()
            .find(|(_, c)| std::sync::Arc::ptr_eq(&c.key, certificate))
            .map_or_else(
                || table.tls().default_certificate().source.to_string(),
                |(_, c)| c.source.to_string(),
            );
        let _ = writeln!(out, "certificate: {source}");
    }
    if let Some(client_auth) = table.client_auth(ostium_model::normalize_host(host).as_ref()) {
        let _ = writeln!(out, "client certificates: {}", client_auth_line(client_auth));
    }
    let Some(matched) = table.route(Some(host), &normal) else {
        out.push_str("no route: built-in 404\n");
        return out;
    };
    let how = match matched.path {
        Some(path) => format!("{:?} host, {:?} path", matched.host, path.kind),
        None => "no path matched: fallback or default backend".to_owned(),
    };
    let _ = writeln!(out, "route: {} ({how})", route_line(matched.route));
    let host_has_certificate =
        ostium_model::normalize_host(host).is_some_and(|h| table.tls().has_certificate(&h));
    let settings = &translation.table.global().https;
    let request = RedirectContext {
        is_tls: https,
        host,
        path: &normal,
        target: path,
        host_has_certificate,
        https: settings,
    };
    match matched.route.redirect(&request) {
        Some(redirection) => {
            let status = redirection.status;
            let location = redirection.location_header();
            let location = location.as_ref().and_then(|l| l.to_str().ok()).unwrap_or("?");
            let why = redirect_cause(matched.route, host_has_certificate);
            let _ = writeln!(out, "answer: {status} redirect to {location} ({why})");
        }
        None if https && host_has_certificate => {
            out.push_str("answer: forwarded; the response gets Strict-Transport-Security (a TLS host)\n");
        }
        None => out.push_str("answer: forwarded\n"),
    }
    out
}

/// Which setting makes a route redirect, by the precedence of `ostium_model::redirection`.
fn redirect_cause(route: &Route, host_has_certificate: bool) -> &'static str {
    let policy = &route.policy;
    if matches!(route.action, RouteAction::Redirect(_)) {
        "from-to-www-redirect"
    } else if policy.app_root.is_some() {
        "app-root"
    } else if policy.redirect.is_some() {
        "permanent-redirect or temporal-redirect"
    } else if policy.https_redirect == HttpsRedirect::Always {
        "force-ssl-redirect"
    } else if host_has_certificate {
        "ssl-redirect, on by default: the host is a TLS host"
    } else {
        "ssl-redirect"
    }
}

#[cfg(test)]
mod tests {
    use crate::{Objects, translate};

    /// `ostium route` names the client certificate rules of the host a request is for.
    #[test]
    fn explain_shows_the_hosts_client_certificate_rules() {
        let input = include_str!("../tests/fixtures/annotations-client-certificates/input.yaml");
        let translation = translate(&Objects::from_yaml(input).unwrap(), &crate::tests::options());
        let explained = translation.explain("Defaults.example.com", "/", true);
        assert!(explained.contains("client certificates: verify on depth 1 from default/ca"), "{explained}");
        assert!(!translation.explain("plain.example.com", "/", true).contains("client certificates"));
    }

    /// A TLS host redirects plain HTTP to HTTPS by default (`ssl-redirect`), as the proxy
    /// answers; over HTTPS the response gets HSTS.
    #[test]
    fn explain_shows_the_default_https_redirect_of_a_tls_host() {
        let input = include_str!("../tests/fixtures/tls-certificates-from-secrets/input.yaml");
        let translation = translate(&Objects::from_yaml(input).unwrap(), &crate::tests::options());
        let tls_host = "foo.example.com";
        let http = translation.explain(tls_host, "/a?b=1", false);
        assert!(
            http.contains(&format!(
                "answer: 308 redirect to https://{tls_host}/a?b=1 (ssl-redirect, on by default: the host is a TLS host)"
            )),
            "{http}"
        );
        let https = translation.explain(tls_host, "/a", true);
        assert!(!translation.explain("other.example.com", "/a", false).contains("redirect"));
        assert!(https.contains("Strict-Transport-Security"), "{https}");
    }

    /// The default backend flag is named as such, not as `(flag)`.
    #[test]
    fn explain_names_the_default_backend_flag() {
        let input = include_str!("../tests/fixtures/default-backend-service-flag/input.yaml");
        let options = crate::Options {
            default_backend_service: Some(ostium_model::NamespacedName::new("default", "fallback")),
            ..crate::tests::options()
        };
        let translation = translate(&Objects::from_yaml(input).unwrap(), &options);
        let explained = translation.explain("nowhere.example.com", "/", false);
        assert!(
            explained.contains("(--default-backend-service)") && !explained.contains("(flag)"),
            "{explained}"
        );
        assert!(explained.contains("answer: forwarded"), "{explained}");
    }
}
