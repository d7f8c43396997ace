//! What kube-apiserver's decoder accepts for `metav1.Time` and `metav1.MicroTime`, and how it
//! writes them back.
//!
//! Upstream (`staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/time.go`, `micro_time.go`)
//! decodes a Time with Go's `time.Parse(time.RFC3339, s)` and a MicroTime with
//! `time.Parse("2006-01-02T15:04:05.000000Z07:00", s)`, then encodes them again in UTC as
//! `2006-01-02T15:04:05Z` (fraction dropped) and `2006-01-02T15:04:05.000000Z` (exactly six
//! digits). This module follows Go's parser step by step, so the same strings are accepted
//! (for a Time: any number of fractional digits, `,` as the separator, a one-digit hour; for a
//! MicroTime: exactly six fractional digits) and a refused one gets Go's `ParseError` text.

/// The Go layout of `metav1.Time` (`time.RFC3339`).
pub(crate) const RFC3339: &str = "2006-01-02T15:04:05Z07:00";
/// The Go layout of `metav1.MicroTime` (`metav1.RFC3339Micro`).
pub(crate) const RFC3339_MICRO: &str = "2006-01-02T15:04:05.000000Z07:00";

/// A parsed instant: UTC seconds since the epoch and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Instant {
    secs: i64,
    nanos: i32,
}

impl Instant {
    /// The encoding upstream writes back: seconds (`micro == false`) or six fractional digits.
    pub(crate) fn format(self, micro: bool) -> Option<String> {
        let ts = jiff::Timestamp::new(self.secs, self.nanos).ok()?;
        let fmt = if micro {
            "%Y-%m-%dT%H:%M:%S%.6fZ"
        } else {
            "%Y-%m-%dT%H:%M:%SZ"
        };
        Some(ts.strftime(fmt).to_string())
    }
}

/// Go's `quote`: a double-quoted string with `"` and `\` escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&c.escape_default().to_string()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn cannot_parse(layout: &str, value: &str, elem: &str, layout_elem: &str) -> String {
    format!(
        "parsing time {} as {}: cannot parse {} as {}",
        quote(value),
        quote(layout),
        quote(elem),
        quote(layout_elem)
    )
}

fn with_message(value: &str, message: &str) -> String {
    format!("parsing time {}{message}", quote(value))
}

fn is_digit(s: &[u8], i: usize) -> bool {
    s.get(i).is_some_and(u8::is_ascii_digit)
}

/// Go's `getnum`: one or two digits (exactly two when `fixed`).
fn getnum(s: &[u8], fixed: bool) -> Option<(i64, &[u8])> {
    if !is_digit(s, 0) {
        return None;
    }
    if !is_digit(s, 1) {
        if fixed {
            return None;
        }
        return Some((i64::from(s[0] - b'0'), &s[1..]));
    }
    Some((
        i64::from(s[0] - b'0') * 10 + i64::from(s[1] - b'0'),
        &s[2..],
    ))
}

/// Go's `atoi`: an optional sign, then only digits.
fn atoi(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut x: i64 = 0;
    for d in digits {
        x = x.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if neg { -x } else { x })
}

enum Frac {
    Ok(i64),
    Bad,
    Range,
}

/// Go's `parseNanoseconds` over the first `n` bytes (separator included).
fn nanoseconds(value: &[u8], n: usize) -> Frac {
    if !matches!(value.first(), Some(b'.' | b',')) {
        return Frac::Bad;
    }
    let n = n.min(10);
    let Some(mut ns) = atoi(&value[1..n]) else {
        return Frac::Bad;
    };
    if ns < 0 {
        return Frac::Range;
    }
    for _ in 0..(10 - n) {
        ns *= 10;
    }
    Frac::Ok(ns)
}

fn days_in(month: i64, year: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The fields of a parsed time before they become an [`Instant`].
#[derive(Default)]
struct Fields {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    min: i64,
    sec: i64,
    nanos: i64,
    offset: i64,
}

impl Fields {
    fn instant(&self) -> Option<Instant> {
        let date = jiff::civil::Date::new(
            i16::try_from(self.year).ok()?,
            i8::try_from(self.month).ok()?,
            i8::try_from(self.day).ok()?,
        )
        .ok()?;
        let dt = date
            .at(
                i8::try_from(self.hour).ok()?,
                i8::try_from(self.min).ok()?,
                i8::try_from(self.sec).ok()?,
                i32::try_from(self.nanos).ok()?,
            )
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp();
        Some(Instant {
            secs: dt.as_second() - self.offset,
            nanos: dt.subsec_nanosecond(),
        })
    }
}

/// Go's `parseRFC3339` fast path (what `time.Parse(time.RFC3339, …)` tries first).
fn fast_rfc3339(s: &[u8]) -> Option<Fields> {
    if s.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>, lo: i64, hi: i64| -> Option<i64> {
        let b = &s[r];
        if !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = b.iter().fold(0i64, |a, d| a * 10 + i64::from(d - b'0'));
        (lo..=hi).contains(&v).then_some(v)
    };
    let year = num(0..4, 0, 9999)?;
    let month = num(5..7, 1, 12)?;
    let day = num(8..10, 1, days_in(month, year))?;
    let hour = num(11..13, 0, 23)?;
    let min = num(14..16, 0, 59)?;
    let sec = num(17..19, 0, 59)?;
    if !(s[4] == b'-' && s[7] == b'-' && s[10] == b'T' && s[13] == b':' && s[16] == b':') {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0;
    if rest.len() >= 2 && rest[0] == b'.' && is_digit(rest, 1) {
        let mut n = 2;
        while is_digit(rest, n) {
            n += 1;
        }
        match nanoseconds(rest, n) {
            Frac::Ok(ns) => nanos = ns,
            _ => return None,
        }
        rest = &rest[n..];
    }
    let mut offset = 0;
    if rest != b"Z" {
        if rest.len() != 6 || !matches!(rest[0], b'+' | b'-') || rest[3] != b':' {
            return None;
        }
        let two = |b: &[u8], hi: i64| -> Option<i64> {
            let v = getnum(b, true)?.0;
            (v <= hi).then_some(v)
        };
        let (hh, mm) = (two(&rest[1..3], 23)?, two(&rest[4..6], 59)?);
        offset = (hh * 60 + mm) * 60;
        if rest[0] == b'-' {
            offset = -offset;
        }
    }
    Some(Fields {
        year,
        month,
        day,
        hour,
        min,
        sec,
        nanos,
        offset,
    })
}

/// Go's general layout-driven `parse` for the two layouts used here.
fn layout_parse(value: &str, micro: bool) -> Result<Fields, String> {
    let layout = if micro { RFC3339_MICRO } else { RFC3339 };
    let mut v = value.as_bytes();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let bad = |b: &[u8], elem: &str| cannot_parse(layout, value, &text(b), elem);
    let range = |what: &str| with_message(value, &format!(": {what} out of range"));
    let mut f = Fields::default();
    // A literal separator of the layout.
    let skip = |v: &[u8], c: u8| -> Result<usize, String> {
        if v.first() == Some(&c) {
            Ok(1)
        } else {
            Err(cannot_parse(
                layout,
                value,
                &text(v),
                &(c as char).to_string(),
            ))
        }
    };
    // Year: four characters, the first a digit, all of them a number.
    if v.len() < 4 || !is_digit(v, 0) {
        return Err(bad(v, "2006"));
    }
    f.year = atoi(&v[..4]).ok_or_else(|| bad(v, "2006"))?;
    v = &v[4..];
    v = &v[skip(v, b'-')?..];
    let (m, rest) = getnum(v, true).ok_or_else(|| bad(v, "01"))?;
    if !(1..=12).contains(&m) {
        return Err(range("month"));
    }
    (f.month, v) = (m, rest);
    v = &v[skip(v, b'-')?..];
    (f.day, v) = getnum(v, true).ok_or_else(|| bad(v, "02"))?;
    v = &v[skip(v, b'T')?..];
    let (h, rest) = getnum(v, false).ok_or_else(|| bad(v, "15"))?;
    if h >= 24 {
        return Err(range("hour"));
    }
    (f.hour, v) = (h, rest);
    v = &v[skip(v, b':')?..];
    let (m, rest) = getnum(v, true).ok_or_else(|| bad(v, "04"))?;
    if m >= 60 {
        return Err(range("minute"));
    }
    (f.min, v) = (m, rest);
    v = &v[skip(v, b':')?..];
    let (s, rest) = getnum(v, true).ok_or_else(|| bad(v, "05"))?;
    if s >= 60 {
        return Err(range("second"));
    }
    (f.sec, v) = (s, rest);
    if micro {
        if v.len() < 7 {
            return Err(bad(v, ".000000"));
        }
        match nanoseconds(v, 7) {
            Frac::Ok(ns) => f.nanos = ns,
            Frac::Bad => return Err(bad(v, ".000000")),
            Frac::Range => return Err(range("fractional second")),
        }
        v = &v[7..];
    } else if v.len() >= 2 && matches!(v[0], b'.' | b',') && is_digit(v, 1) {
        // A fraction the layout does not name is still accepted.
        let mut n = 2;
        while is_digit(v, n) {
            n += 1;
        }
        match nanoseconds(v, n) {
            Frac::Ok(ns) => f.nanos = ns,
            Frac::Bad => return Err(bad(v, "05")),
            Frac::Range => return Err(range("fractional second")),
        }
        v = &v[n..];
    }
    if v.first() == Some(&b'Z') {
        v = &v[1..];
    } else {
        if v.len() < 6 || v[3] != b':' {
            return Err(bad(v, "Z07:00"));
        }
        let hh = getnum(&v[1..3], true).ok_or_else(|| bad(v, "Z07:00"))?.0;
        let mm = getnum(&v[4..6], true).ok_or_else(|| bad(v, "Z07:00"))?.0;
        if hh > 24 {
            return Err(range("time zone offset hour"));
        }
        if mm > 60 {
            return Err(range("time zone offset minute"));
        }
        f.offset = (hh * 60 + mm) * 60;
        match v[0] {
            b'+' => {}
            b'-' => f.offset = -f.offset,
            _ => return Err(bad(v, "Z07:00")),
        }
        v = &v[6..];
    }
    if !v.is_empty() {
        return Err(with_message(
            value,
            &format!(": extra text: {}", quote(&text(v))),
        ));
    }
    if f.day < 1 || f.day > days_in(f.month, f.year) {
        return Err(range("day"));
    }
    Ok(f)
}

/// Parses `value` as upstream decodes a Time (`micro == false`) or a MicroTime; `Err` holds
/// Go's error text.
pub(crate) fn parse(value: &str, micro: bool) -> Result<Instant, String> {
    let fields = match (!micro).then(|| fast_rfc3339(value.as_bytes())).flatten() {
        Some(f) => f,
        None => layout_parse(value, micro)?,
    };
    // Go represents every year this layout can name; jiff stops at 9999 after the offset.
    fields
        .instant()
        .ok_or_else(|| with_message(value, ": year out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str, micro: bool) -> Result<String, String> {
        parse(s, micro).map(|i| i.format(micro).unwrap_or_default())
    }

    #[test]
    fn time_accepts_what_go_accepts_and_truncates() {
        assert_eq!(
            canon("2024-05-06T07:08:09Z", false).unwrap(),
            "2024-05-06T07:08:09Z"
        );
        assert_eq!(
            canon("2024-05-06T07:08:09.987654321Z", false).unwrap(),
            "2024-05-06T07:08:09Z"
        );
        assert_eq!(
            canon("2024-05-06T07:08:09,5+02:00", false).unwrap(),
            "2024-05-06T05:08:09Z"
        );
        assert_eq!(
            canon("2024-05-06T7:08:09Z", false).unwrap(),
            "2024-05-06T07:08:09Z"
        );
    }

    #[test]
    fn time_refusals_carry_go_text() {
        assert_eq!(
            canon("2024-05-06 07:08:09Z", false).unwrap_err(),
            r#"parsing time "2024-05-06 07:08:09Z" as "2006-01-02T15:04:05Z07:00": cannot parse " 07:08:09Z" as "T""#
        );
        assert_eq!(
            canon("2024-05-06T07:08:09", false).unwrap_err(),
            r#"parsing time "2024-05-06T07:08:09" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "Z07:00""#
        );
        assert_eq!(
            canon("2024-13-06T07:08:09Z", false).unwrap_err(),
            r#"parsing time "2024-13-06T07:08:09Z": month out of range"#
        );
        assert_eq!(
            canon("2023-02-29T07:08:09Z", false).unwrap_err(),
            r#"parsing time "2023-02-29T07:08:09Z": day out of range"#
        );
        assert_eq!(
            canon("2024-05-06T07:08:09Zjunk", false).unwrap_err(),
            r#"parsing time "2024-05-06T07:08:09Zjunk": extra text: "junk""#
        );
        assert_eq!(
            canon("", false).unwrap_err(),
            r#"parsing time "" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "2006""#
        );
    }

    #[test]
    fn micro_time_wants_six_digits() {
        assert_eq!(
            canon("2024-05-06T07:08:09.123456Z", true).unwrap(),
            "2024-05-06T07:08:09.123456Z"
        );
        assert_eq!(
            canon("2024-05-06T09:08:09.123456+02:00", true).unwrap(),
            "2024-05-06T07:08:09.123456Z"
        );
        assert_eq!(
            canon("2024-05-06T07:08:09.123456789Z", true).unwrap_err(),
            r#"parsing time "2024-05-06T07:08:09.123456789Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "789Z" as "Z07:00""#
        );
        assert_eq!(
            canon("2024-05-06T07:08:09Z", true).unwrap_err(),
            r#"parsing time "2024-05-06T07:08:09Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "Z" as ".000000""#
        );
        assert_eq!(
            canon("2024-05-06T07:08:09.123Z", true).unwrap_err(),
            r#"parsing time "2024-05-06T07:08:09.123Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse ".123Z" as ".000000""#
        );
    }
}
