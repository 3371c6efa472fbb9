//! The log's two line formats, as tracing-subscriber's `Full` (text) and
//! `Json` (flattened, with the current span) lay them out, written for the
//! common case without going through `std::fmt` per part: the timestamp's
//! date is formatted once a second, integers with `itoa`, plain strings
//! copied as they are. The call line is made for every call, and the
//! crate's own formatters cost several times more a line (see "Logs" in
//! BENCHMARKS.md). The tests below hold the output to the crate's own,
//! byte for byte; a terminal (ANSI colours) gets the crate's formatter.

use std::{
    cell::RefCell,
    fmt::{self, Write as _},
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{
    Event, Level, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    field::VisitOutput,
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::{self, Writer},
    },
    registry::LookupSpan,
};

/// The text line: `timestamp LEVEL span{fields}: target: message field=value…`.
#[derive(Debug, Default)]
pub struct Text {
    crates_own: format::Format<format::Full>,
}

/// One JSON object per line: timestamp, level, the event's fields, target,
/// and the current span (its fields and name) under `span`.
#[derive(Debug)]
pub struct Json {
    crates_own: format::Format<format::Json>,
}

impl Default for Json {
    fn default() -> Self {
        Self {
            crates_own: format::Format::default()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if w.has_ansi_escapes() || is_from_log_crate(meta) {
            // A person at a terminal (colours matter, speed does not), or a
            // record of the `log` crate's, whose target the crate recovers.
            return self.crates_own.format_event(ctx, w, event);
        }
        write_timestamp(&mut w)?;
        w.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                w.write_str(span.metadata().name())?;
                seen = true;
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    w.write_char('{')?;
                    w.write_str(fields)?;
                    w.write_char('}')?;
                }
                w.write_char(':')?;
            }
            if seen {
                w.write_char(' ')?;
            }
        }
        w.write_str(meta.target())?;
        w.write_str(": ")?;
        let mut fields = TextFields {
            w: &mut w,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

/// The event's fields: the common values (plain strings, integers,
/// booleans) written here, the rest (the message, errors, `Debug` values)
/// by the crate's own visitor, so that they read exactly as it writes them.
struct TextFields<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl TextFields<'_, '_> {
    /// Writes `name=` after the separator; `false` for a field written
    /// some other way.
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() {
            return false;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.w.write_char(' ')?;
            }
            self.w.write_str(name.strip_prefix("r#").unwrap_or(name))?;
            self.w.write_char('=')
        })();
        self.result.is_ok()
    }

    fn crates_own(&mut self, record: impl FnOnce(&mut format::DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = format::DefaultVisitor::new(self.w.by_ref(), self.first);
        record(&mut visitor);
        self.result = visitor.finish();
        self.first = false;
    }

    /// Fields the crate's visitor writes in its own way.
    fn is_special(field: &Field) -> bool {
        field.name() == "message"
    }
}

impl Visit for TextFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !is_plain(value) || Self::is_special(field) {
            self.crates_own(|visitor| visitor.record_str(field, value));
        } else if self.start(field) {
            self.result = (|| {
                self.w.write_char('"')?;
                self.w.write_str(value)?;
                self.w.write_char('"')
            })();
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if Self::is_special(field) {
            self.crates_own(|visitor| visitor.record_i64(field, value));
        } else if self.start(field) {
            self.result = self.w.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if Self::is_special(field) {
            self.crates_own(|visitor| visitor.record_u64(field, value));
        } else if self.start(field) {
            self.result = self.w.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if Self::is_special(field) {
            self.crates_own(|visitor| visitor.record_bool(field, value));
        } else if self.start(field) {
            self.result = self.w.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.crates_own(|visitor| visitor.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.crates_own(|visitor| visitor.record_debug(field, value));
    }
}

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if is_from_log_crate(meta) {
            return self.crates_own.format_event(ctx, w, event);
        }
        w.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut w)?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_char('"')?;
        let mut fields = JsonFields {
            w: &mut w,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        write_json_str(&mut w, meta.target())?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            // The span's fields, as the JSON field formatter stored them:
            // an object, here opened up to add the span's name.
            w.write_str(",\"span\":{")?;
            if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                let inner = fields
                    .trim()
                    .strip_prefix('{')
                    .and_then(|rest| rest.strip_suffix('}'))
                    .unwrap_or_default();
                if !inner.is_empty() {
                    w.write_str(inner)?;
                    w.write_char(',')?;
                }
            }
            w.write_str("\"name\":")?;
            write_json_str(&mut w, span.metadata().name())?;
            w.write_char('}')?;
        }
        w.write_str("}\n")
    }
}

struct JsonFields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl JsonFields<'_, '_> {
    fn key(&mut self, field: &Field) -> bool {
        if self.result.is_ok() {
            self.result = self
                .w
                .write_char(',')
                .and_then(|()| write_json_str(self.w, field.name()))
                .and_then(|()| self.w.write_char(':'));
        }
        self.result.is_ok()
    }
}

impl Visit for JsonFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            self.result = write_json_str(self.w, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            self.result = self.w.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            self.result = self.w.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.result = self.w.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            self.result = if value.is_finite() {
                write!(self.w, "{value:?}")
            } else {
                self.w.write_str("null")
            };
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            self.result = (|| {
                self.w.write_char('"')?;
                write!(JsonEscaping(self.w), "{value:?}")?;
                self.w.write_char('"')
            })();
        }
    }
}

/// A `log` crate record (tracing-log's bridge): its real target and
/// level are in `log.*` fields the crate's formatters read.
fn is_from_log_crate(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == "log"
}

/// Printable ASCII without a quote or backslash: written between quotes as
/// it is, the same as its `Debug`.
fn is_plain(value: &str) -> bool {
    value
        .bytes()
        .all(|byte| (b' '..=b'~').contains(&byte) && byte != b'"' && byte != b'\\')
}

fn write_json_str(w: &mut Writer<'_>, value: &str) -> fmt::Result {
    w.write_char('"')?;
    JsonEscaping(w).write_str(value)?;
    w.write_char('"')
}

/// Escapes what JSON strings may not hold as they are, as serde_json does.
struct JsonEscaping<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for JsonEscaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (at, byte) in s.bytes().enumerate() {
            let escaped = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..at])?;
            if escaped.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escaped)?;
            }
            plain = at + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

thread_local! {
    /// The second last formatted on this thread, and its
    /// `YYYY-MM-DDTHH:MM:SS` text.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Now, in UTC, to the microsecond: `2026-12-06T15:49:02.059893Z`, as the
/// crate's default timer writes it.
fn write_timestamp(w: &mut Writer<'_>) -> fmt::Result {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let second = now.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            text.clear();
            write_date_time(text, second)?;
            *cached = second;
        }
        w.write_str(text)
    })?;
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(now.subsec_micros());
    w.write_char('.')?;
    for _ in micros.len()..6 {
        w.write_char('0')?;
    }
    w.write_str(micros)?;
    w.write_char('Z')
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (days to civil date after Howard
/// Hinnant's algorithm).
fn write_date_time(out: &mut String, unix_seconds: u64) -> fmt::Result {
    let days = unix_seconds / 86_400;
    let in_day = unix_seconds % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use tracing_subscriber::{Layer, fmt::MakeWriter, layer::SubscriberExt};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    #[derive(Debug)]
    struct Failure {
        source: Option<io::Error>,
    }

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("it failed")
        }
    }

    impl std::error::Error for Failure {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source
                .as_ref()
                .map(|e| e as &(dyn std::error::Error + 'static))
        }
    }

    #[derive(Debug)]
    enum Code {
        Ok,
    }

    /// Every kind of record and value the service logs, and the odd ones.
    fn events() {
        let user_id: Option<i64> = None;
        tracing::info!(method = "/auth.v1.UserService/GetMe", code = ?Code::Ok, latency_us = 42u64, user_id = Some(7i64), "grpc call");
        tracing::warn!(
            method = "/x",
            user_id,
            trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            "grpc call failed"
        );
        tracing::error!(error = %"disk \"full\"\n", "could not write");
        tracing::debug!(
            negative = -5i64,
            yes = true,
            no = false,
            ratio = 0.25f64,
            big = 1u128 << 100,
            "numbers"
        );
        tracing::trace!(r#type = "raw", "a raw identifier");
        tracing::info!(target: "audit", audit = true, event = "login", outcome = "failure", username = " Ghost\u{1b}[31m", client = "127.0.0.1", "login refused: unknown_user");
        tracing::info!(
            username = "é\t\\ \"quoted\"",
            "not plain: üñí \u{7f}\u{1b}[0m bell\u{7}"
        );
        tracing::info!("message only");
        tracing::info!(only = "fields");
        let nested = Failure {
            source: Some(io::Error::other("the disk")),
        };
        let error: &(dyn std::error::Error + 'static) = &nested;
        tracing::warn!(error, "with a source");
        let alone: &(dyn std::error::Error + 'static) = &Failure { source: None };
        tracing::warn!(error = alone, "without a source");
        let call = tracing::info_span!(
            "call",
            method = "/auth.v1.AuthService/Login",
            user_id = tracing::field::Empty
        );
        call.record("user_id", 3i64);
        call.in_scope(|| {
            tracing::info!(code = ?Code::Ok, "inside a span");
            tracing::info_span!("inner").in_scope(|| tracing::warn!("two spans deep"));
            tracing::info_span!("query", statement = "SELECT \"x\"")
                .in_scope(|| tracing::info!("escaped span field"));
        });
    }

    /// The timestamp is `2026-12-06T15:49:02.059893Z` in both, but not the
    /// same microsecond: compared by shape, then left out.
    fn without_timestamps(lines: Vec<String>, json: bool) -> Vec<String> {
        lines
            .into_iter()
            .map(|line| {
                let at = if json { "{\"timestamp\":\"".len() } else { 0 };
                if !json && !line.starts_with("20") {
                    // The rest of a record whose value held a line break.
                    return line;
                }
                let stamp = &line[at..at + 27];
                assert!(
                    stamp.len() == 27
                        && stamp.as_bytes()[10] == b'T'
                        && stamp.as_bytes()[19] == b'.'
                        && stamp.ends_with('Z'),
                    "{line}"
                );
                format!("{}{}", &line[..at], &line[at + 27..])
            })
            .collect()
    }

    fn both<L, M>(crates: L, ours: M, json: bool) -> (Vec<String>, Vec<String>)
    where
        L: FnOnce(Captured) -> Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>,
        M: FnOnce(Captured) -> Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>,
    {
        let (expected, actual) = (Captured::default(), Captured::default());
        tracing::subscriber::with_default(
            tracing_subscriber::registry().with(crates(expected.clone())),
            events,
        );
        tracing::subscriber::with_default(
            tracing_subscriber::registry().with(ours(actual.clone())),
            events,
        );
        (
            without_timestamps(expected.lines(), json),
            without_timestamps(actual.lines(), json),
        )
    }

    #[test]
    fn text_lines_are_the_crates_own_byte_for_byte() {
        let (expected, actual) = both(
            |out| {
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(out)
                    .with_filter(tracing_subscriber::filter::LevelFilter::TRACE)
                    .boxed()
            },
            |out| {
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .event_format(Text::default())
                    .with_writer(out)
                    .with_filter(tracing_subscriber::filter::LevelFilter::TRACE)
                    .boxed()
            },
            false,
        );
        assert_eq!(expected.len(), 15, "{expected:#?}");
        assert_eq!(actual, expected);
    }

    #[test]
    fn json_lines_are_the_crates_own() {
        let (expected, actual) = both(
            |out| {
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(out)
                    .with_filter(tracing_subscriber::filter::LevelFilter::TRACE)
                    .boxed()
            },
            |out| {
                tracing_subscriber::fmt::layer()
                    .fmt_fields(format::JsonFields::new())
                    .event_format(Json::default())
                    .with_writer(out)
                    .with_filter(tracing_subscriber::filter::LevelFilter::TRACE)
                    .boxed()
            },
            true,
        );
        assert_eq!(expected.len(), 14, "{expected:#?}");
        // The same objects: the same keys in the same order, the same values.
        for (expected, actual) in expected.iter().zip(&actual) {
            let parse = |line: &str| -> Vec<(String, serde_json::Value)> {
                let value: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                let serde_json::Value::Object(map) = value else {
                    panic!("not an object: {line}")
                };
                map.into_iter().collect()
            };
            assert_eq!(parse(actual), parse(expected), "\n{actual}\n{expected}");
        }
        assert_eq!(actual.len(), expected.len());
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        for (unix, expected) in [
            (0, "1970-01-01T00:00:00"),
            (68_169_600, "1972-02-29T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_796_571_000, "2026-12-06T15:30:00"),
            (4_102_444_799, "2099-12-31T23:59:59"),
        ] {
            let mut text = String::new();
            write_date_time(&mut text, unix).unwrap();
            assert_eq!(text, expected);
        }
    }
}
