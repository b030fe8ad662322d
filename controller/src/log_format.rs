//! The JSON log: the same lines as tracing-subscriber's JSON format with flattened events,
//! written with fewer steps.
//!
//! Its formatter serializes through an adaptor that checks each small piece for UTF-8 and
//! escapes a `Display` field piece by piece; with the access log on, that was most of a proxied
//! request's instructions in user space. Here the line is serialized with the same serializer
//! (serde_json, so strings and numbers come out byte for byte the same) into a buffer kept per
//! thread, a field written with `Display` or `Debug` is rendered whole before it is escaped, and
//! the line is handed on in one piece. An event inside a span is left to the library's
//! formatter, which writes the span's fields. The timestamp is the library's too, with the date
//! and time of day written once a second rather than for each line.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use serde::Serializer as _;
use serde::ser::SerializeMap;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, FormatEvent, FormatFields, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, format};
use tracing_subscriber::registry::LookupSpan;

/// The time as tracing-subscriber's `SystemTime` writes it (`2026-11-27T08:19:02.123456Z`, UTC
/// to the microsecond).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock;

thread_local! {
    /// The second last written, and its text up to the fraction (`2026-11-27T08:19:02.`).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for Clock {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let Some(since_epoch) = since_epoch.ok().filter(|d| d.as_secs() <= LAST_FOUR_DIGIT_SECOND) else {
            return SystemTime.format_time(w);
        };
        let seconds = since_epoch.as_secs();
        let write = |second: &RefCell<(u64, String)>| {
            let (cached, text) = &mut *second.borrow_mut();
            if *cached != seconds {
                text.clear();
                write_second(text, seconds)?;
                *cached = seconds;
            }
            w.write_str(text)?;
            let micros = since_epoch.subsec_micros();
            for place in (0..6).rev() {
                w.write_char(char::from(b'0' + (micros / 10u32.pow(place) % 10) as u8))?;
            }
            w.write_char('Z')
        };
        // While the thread's locals are being destroyed, the library's clock.
        SECOND.try_with(write).unwrap_or_else(|_| SystemTime.format_time(w))
    }
}

/// 9999-12-31T23:59:59Z: later years are written by the library (`+10000-…`).
const LAST_FOUR_DIGIT_SECOND: u64 = 253_402_300_799;

/// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch (UTC, proleptic Gregorian calendar).
fn write_second(out: &mut impl fmt::Write, seconds: u64) -> fmt::Result {
    let (days, time) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = ostium_model::civil_from_days(days);
    let (hour, minute, second) = (time / 3_600, time / 60 % 60, time % 60);
    write!(out, "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.")
}

/// Formats events as `{"timestamp":…,"level":…,<the event's fields>,"target":…}`.
#[derive(Debug)]
pub(crate) struct JsonLines<T> {
    timer: T,
    /// For events in a span, and for one logged while another is being formatted.
    library: Format<Json, T>,
}

impl JsonLines<Clock> {
    pub(crate) fn new() -> Self {
        Self::with_timer(Clock)
    }
}

impl<T: FormatTime + Clone> JsonLines<T> {
    pub(crate) fn with_timer(timer: T) -> Self {
        Self { library: format().json().flatten_event(true).with_timer(timer.clone()), timer }
    }
}

thread_local! {
    /// The line being serialized, and a field's `Debug` text.
    static SCRATCH: RefCell<(Vec<u8>, String)> = const { RefCell::new((Vec::new(), String::new())) };
}

impl<S, N, T> FormatEvent<S, N> for JsonLines<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.parent().is_some() || ctx.lookup_current().is_some() {
            return self.library.format_event(ctx, writer, event);
        }
        let write = |scratch: &RefCell<(Vec<u8>, String)>| {
            // Taken when a field's `Debug` logs: that event is the library's to write.
            let Ok(mut scratch) = scratch.try_borrow_mut() else { return None };
            let (line, text) = &mut *scratch;
            line.clear();
            text.clear();
            // A field that fails to format loses its event, as a line cut short would be worse
            // (the library's formatter panics there).
            let written = self.timer.format_time(&mut Writer::new(text)).and_then(|()| {
                serialize(line, text, event).map_err(|_| fmt::Error)?;
                line.push(b'\n');
                writer.write_str(std::str::from_utf8(line).map_err(|_| fmt::Error)?)
            });
            // One very long line does not keep its memory for good.
            if line.capacity() > 64 * 1024 || text.capacity() > 64 * 1024 {
                *scratch = (Vec::new(), String::new());
            }
            Some(written)
        };
        match SCRATCH.try_with(write) {
            Ok(Some(written)) => written,
            // Taken, or being destroyed with the thread.
            _ => self.library.format_event(ctx, writer, event),
        }
    }
}

/// The event as one JSON object, `timestamp` (in `text` on entry) first.
fn serialize(line: &mut Vec<u8>, text: &mut String, event: &Event<'_>) -> serde_json::Result<()> {
    let meta = event.metadata();
    let mut serializer = serde_json::Serializer::new(line);
    let mut map = serializer.serialize_map(None)?;
    map.serialize_entry("timestamp", text.as_str())?;
    map.serialize_entry("level", level(meta.level()))?;
    let mut fields = Fields { map, text, state: Ok(()) };
    event.record(&mut fields);
    let Fields { mut map, state, .. } = fields;
    state?;
    map.serialize_entry("target", meta.target())?;
    map.end()
}

fn level(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// The event's fields as entries of the map, as tracing-serde records them; after the first
/// failure the rest are skipped and the event is not written.
struct Fields<'a, M> {
    map: M,
    text: &'a mut String,
    state: serde_json::Result<()>,
}

impl<M: SerializeMap<Error = serde_json::Error>> Fields<'_, M> {
    fn entry(&mut self, field: &Field, value: &(impl serde::Serialize + ?Sized)) {
        if self.state.is_ok() {
            self.state = self.map.serialize_entry(field.name(), value);
        }
    }
}

impl<M: SerializeMap<Error = serde_json::Error>> Visit for Fields<'_, M> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.state.is_err() {
            return;
        }
        self.text.clear();
        if write!(self.text, "{value:?}").is_err() {
            self.state = Err(serde::ser::Error::custom("a field's Debug failed"));
            return;
        }
        let text = std::mem::take(self.text);
        self.entry(field, text.as_str());
        *self.text = text;
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// A clock that always says the same, so that two formatters' lines can be compared.
    #[derive(Clone, Copy, Debug)]
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-11-27T08:19:02.123456Z")
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// What `events` logs with the library's JSON format and with [`JsonLines`].
    fn both(events: impl Fn()) -> (String, String) {
        let library = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(library.clone())
            .with_max_level(Level::TRACE)
            .json()
            .flatten_event(true)
            .with_timer(Fixed)
            .finish();
        tracing::subscriber::with_default(subscriber, &events);
        let ours = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(ours.clone())
            .with_max_level(Level::TRACE)
            .json()
            .event_format(JsonLines::with_timer(Fixed))
            .finish();
        tracing::subscriber::with_default(subscriber, &events);
        let text = |c: Captured| String::from_utf8(c.0.lock().unwrap().clone()).unwrap();
        (text(library), text(ours))
    }

    #[derive(Debug)]
    struct Failing;

    impl fmt::Display for Failing {
        fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
            Err(fmt::Error)
        }
    }

    #[test]
    fn seconds_are_written_as_dates_and_times_of_day() {
        let cases = [
            (0, "1970-01-01T00:00:00."),
            (951_782_400, "2000-02-29T00:00:00."),
            (951_868_799, "2000-02-29T23:59:59."),
            (1_795_766_557, "2026-11-27T08:02:37."),
            (4_107_542_399, "2100-02-28T23:59:59."),
            (4_107_542_400, "2100-03-01T00:00:00."),
            (LAST_FOUR_DIGIT_SECOND, "9999-12-31T23:59:59."),
        ];
        for (seconds, text) in cases {
            let mut out = String::new();
            write_second(&mut out, seconds).unwrap();
            assert_eq!(out, text, "{seconds}");
        }
    }

    #[test]
    fn the_clock_writes_the_time_as_the_library_does() {
        let now = |timer: &dyn Fn(&mut Writer<'_>) -> fmt::Result| {
            let mut text = String::new();
            timer(&mut Writer::new(&mut text)).unwrap();
            text
        };
        // Compared to the second, read between two of the library's in the same second.
        for _ in 0..100 {
            let before = now(&|w| SystemTime.format_time(w));
            let ours = now(&|w| Clock.format_time(w));
            let after = now(&|w| SystemTime.format_time(w));
            let second = |t: &str| t[..20].to_owned();
            if second(&before) != second(&after) {
                continue;
            }
            assert_eq!(second(&ours), second(&before), "{ours} {before}");
            assert_eq!((ours.len(), ours.ends_with('Z')), (before.len(), true), "{ours} {before}");
            assert!(ours[20..26].bytes().all(|b| b.is_ascii_digit()), "{ours}");
            assert!(
                before[20..26] <= ours[20..26] && ours[20..26] <= after[20..26],
                "{before} {ours} {after}"
            );
            return;
        }
        panic!("the second changed in each of 100 tries");
    }

    #[test]
    fn lines_are_the_librarys_byte_for_byte() {
        let client: std::net::SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let error = io::Error::other("refused \"twice\"");
        let (library, ours) = both(|| {
            tracing::info!("listening");
            tracing::warn!(port = 8080u16, "bad {} \"quoted\"\n\u{1}line", "value");
            tracing::error!(target: "ostium::access", client = %client, method = "GET", path = "/a\\b\té",
                status = 503u16, bytes_out = 0u64, duration_ms = 12.346, upstream_ms = 1.0, ok = true,
                delta = -3i64, nan = f64::NAN, big = u128::MAX, error = &error as &dyn std::error::Error);
            tracing::debug!(absent = Option::<&str>::None, present = Some("x"), bytes = &b"\x00\xff"[..]);
            tracing::trace!(message = "explicit", message2 = ?("tuple", 1));
            tracing::info!(r#type = "keyword", target = "a field named like a key");
        });
        assert_eq!(library.lines().count(), 6, "{library}");
        assert_eq!(ours, library);
    }

    #[test]
    fn an_event_in_a_span_is_written_with_the_span_as_the_library_writes_it() {
        let (library, ours) = both(|| {
            let span = tracing::info_span!("connection", peer = "127.0.0.1:1");
            let _entered = span.enter();
            tracing::info!(status = 200u16, "done");
        });
        assert!(library.contains(r#""span":{"peer":"127.0.0.1:1","name":"connection"}"#), "{library}");
        assert_eq!(ours, library);
    }

    #[test]
    fn an_event_logged_while_another_is_formatted_is_written_by_the_library() {
        // As when a field's `Debug` logs: the thread's buffers are taken.
        let (library, ours) = both(|| {
            SCRATCH.with(|scratch| {
                let _taken = scratch.borrow_mut();
                tracing::info!(status = 200u16, "nested");
            })
        });
        assert!(library.contains(r#""message":"nested""#), "{library}");
        assert_eq!(ours, library);
    }

    #[test]
    fn a_field_that_fails_to_format_loses_its_event_and_no_other() {
        // The library's formatter panics here (serde_json unwraps the `Display`).
        let ours = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(ours.clone())
            .json()
            .event_format(JsonLines::with_timer(Fixed))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(broken = %Failing, "lost");
            tracing::info!("kept");
        });
        let text = String::from_utf8(ours.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("\"lost\""), "{text}");
        let kept = r#"{"timestamp":"2026-11-27T08:19:02.123456Z","level":"INFO","message":"kept","target":"ostium::log_format::tests"}"#;
        assert_eq!(text.lines().last(), Some(kept), "{text}");
    }
}
