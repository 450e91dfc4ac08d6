//! Pure helpers of `spool group`: the consumer protocol's assignment bytes, ISO-8601 times, and
//! column-aligned tables. No I/O besides writing to the given sink.
//!
//! Fault model: assignment bytes come from other clients through the broker, so every length is
//! checked against the bytes that remain before it is used; a malformed assignment is an error
//! value, never a panic or an allocation sized by the input.

use std::io::Write;

/// One member's assignment: topic → partitions, in wire order.
pub type Assignment = Vec<(String, Vec<i32>)>;

/// Decodes `ConsumerProtocolAssignment`: version i16, topics array (i32 count; each a string with
/// an i16 length and an i32 array of partitions), then user data (i32 length, -1 for null), which
/// is skipped. Empty bytes (a member between rebalances) is an empty assignment. Kafka's
/// `ConsumerProtocolAssignment.json` v0–v3 share this non-flexible layout; later versions are
/// read with it too, as Kafka's own parser does, and any trailing fields are ignored.
pub fn decode_assignment(bytes: &[u8]) -> Result<Assignment, &'static str> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader { bytes };
    let version = r.i16()?;
    if version < 0 {
        return Err("negative assignment version");
    }
    let topics = r.count(2 + 4)?;
    let mut assignment = Vec::with_capacity(topics);
    for _ in 0..topics {
        let topic = r.string()?;
        let count = r.count(4)?;
        let mut partitions = Vec::with_capacity(count);
        for _ in 0..count {
            partitions.push(r.i32()?);
        }
        assignment.push((topic, partitions));
    }
    Ok(assignment)
}

/// A bounds-checked big-endian cursor.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or("assignment truncated")?;
        self.bytes = rest;
        Ok(*head)
    }

    fn i16(&mut self) -> Result<i16, &'static str> {
        self.take::<2>().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, &'static str> {
        self.take::<4>().map(i32::from_be_bytes)
    }

    /// An array length, checked against the bytes left at `element_bytes_min` per element.
    fn count(&mut self, element_bytes_min: usize) -> Result<usize, &'static str> {
        let n = usize::try_from(self.i32()?).map_err(|_| "negative array length")?;
        if n > self.bytes.len() / element_bytes_min {
            return Err("array length exceeds the assignment");
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let len = usize::try_from(self.i16()?).map_err(|_| "null topic name")?;
        if len > self.bytes.len() {
            return Err("topic name exceeds the assignment");
        }
        let (s, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        String::from_utf8(s.to_vec()).map_err(|_| "topic name is not UTF-8")
    }
}

/// `t(0,1),u(2)`, or `-` for nothing assigned.
pub fn format_assignment(assignment: &Assignment) -> String {
    if assignment.iter().all(|(_, p)| p.is_empty()) {
        return "-".to_string();
    }
    assignment
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(t, p)| {
            let parts: Vec<String> = p.iter().map(i32::to_string).collect();
            format!("{t}({})", parts.join(","))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Milliseconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM|±HHMM]`; without a
/// zone the time is UTC. A space may replace the `T`.
pub fn parse_iso8601_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
        return None;
    }
    let (date, rest) = (&s[..10], &s[11..]);
    let year: i64 = field(date, 0, 4)?;
    let month: i64 = field(date, 5, 7)?;
    let day: i64 = field(date, 8, 10)?;
    if date.as_bytes()[4] != b'-' || date.as_bytes()[7] != b'-' {
        return None;
    }
    let hour: i64 = field(rest, 0, 2)?;
    let minute: i64 = field(rest, 3, 5)?;
    let second: i64 = field(rest, 6, 8)?;
    if rest.as_bytes()[2] != b':' || rest.as_bytes()[5] != b':' {
        return None;
    }
    let (millis, zone) = fraction_ms(&rest[8..])?;
    let offset_minutes = zone_offset_minutes(zone)?;
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    if !valid {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// Digits `s[from..to]` as a number, or None when any is not a digit.
fn field(s: &str, from: usize, to: usize) -> Option<i64> {
    let digits = s.get(from..to)?;
    if !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An optional `.fff...` (truncated to milliseconds), and what follows it.
fn fraction_ms(s: &str) -> Option<(i64, &str)> {
    let Some(frac) = s.strip_prefix('.') else {
        return Some((0, s));
    };
    let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let ms_digits = &frac[..digits.min(3)];
    let scale = 10_i64.pow(3 - u32::try_from(ms_digits.len()).ok()?);
    Some((ms_digits.parse::<i64>().ok()? * scale, &frac[digits..]))
}

fn zone_offset_minutes(zone: &str) -> Option<i64> {
    if zone.is_empty() || zone == "Z" || zone == "z" {
        return Some(0);
    }
    let sign = match zone.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hhmm = zone[1..].replace(':', "");
    if hhmm.len() != 4 {
        return None;
    }
    let (h, m) = (field(&hhmm, 0, 2)?, field(&hhmm, 2, 4)?);
    (h < 24 && m < 60).then_some(sign * (h * 60 + m))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Writes rows under a header, each column padded to its widest cell plus two spaces (the last
/// column unpadded), like Kafka's tools. Empty cells print as `-` so columns never collapse.
pub fn write_table(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let cell = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        assert_eq!(row.len(), header.len(), "table row width");
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell(c).chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<w$}", w = widths[i] + 2));
            }
        }
        s
    };
    writeln!(
        out,
        "{}",
        line(header.iter().map(|h| h.to_string()).collect())
    )?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(|c| cell(c)).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment_bytes(
        version: i16,
        topics: &[(&str, &[i32])],
        user_data: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for (t, parts) in topics {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
            b.extend_from_slice(&(parts.len() as i32).to_be_bytes());
            for p in *parts {
                b.extend_from_slice(&p.to_be_bytes());
            }
        }
        match user_data {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(d) => {
                b.extend_from_slice(&(d.len() as i32).to_be_bytes());
                b.extend_from_slice(d);
            }
        }
        b
    }

    #[test]
    fn decodes_assignments_of_every_version() {
        for version in 0..=4 {
            let b = assignment_bytes(version, &[("t", &[0, 2]), ("u", &[1])], Some(b"ud"));
            let a = decode_assignment(&b).expect("decode");
            assert_eq!(
                a,
                vec![("t".to_string(), vec![0, 2]), ("u".to_string(), vec![1])]
            );
            assert_eq!(format_assignment(&a), "t(0,2),u(1)");
        }
        let null_user_data = assignment_bytes(0, &[("t", &[5])], None);
        assert_eq!(decode_assignment(&null_user_data).expect("null").len(), 1);
        assert_eq!(decode_assignment(&[]).expect("empty"), vec![]);
        assert_eq!(format_assignment(&vec![]), "-");
    }

    #[test]
    fn rejects_malformed_assignments() {
        let good = assignment_bytes(1, &[("topic", &[0, 1, 2])], None);
        // Every truncation inside the topics array fails cleanly (user data is not read).
        for cut in 1..good.len() - 4 {
            assert!(decode_assignment(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = 0i16.to_be_bytes().to_vec();
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_assignment(&huge).is_err());
        let mut negative = 0i16.to_be_bytes().to_vec();
        negative.extend_from_slice(&(-5i32).to_be_bytes());
        assert!(decode_assignment(&negative).is_err());
        assert!(decode_assignment(&(-1i16).to_be_bytes()).is_err());
    }

    #[test]
    fn parses_iso8601() {
        let cases = [
            ("1970-01-01T00:00:00", Some(0)),
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-01 00:00:01.5", Some(1500)),
            ("2024-02-29T12:34:56.789Z", Some(1_709_210_096_789)),
            ("2024-02-29T12:34:56.789123+01:00", Some(1_709_206_496_789)),
            ("2024-02-29T12:34:56-0130", Some(1_709_215_496_000)),
            ("1969-12-31T23:59:59Z", Some(-1000)),
            ("2023-02-29T00:00:00", None),
            ("2024-13-01T00:00:00", None),
            ("2024-01-01T24:00:00", None),
            ("2024-01-01", None),
            ("2024-01-01T00:00:00+1", None),
            ("2024-01-01T00:00:00.", None),
            ("yesterday", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_iso8601_ms(s), want, "{s}");
        }
    }

    #[test]
    fn tables_align_columns() {
        let mut out = Vec::new();
        let rows = vec![
            vec![
                "g".to_string(),
                "Stable".to_string(),
                "consumer".to_string(),
            ],
            vec!["longer-group".to_string(), String::new(), "x".to_string()],
        ];
        write_table(&mut out, &["GROUP", "STATE", "PROTOCOL-TYPE"], &rows).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "GROUP         STATE   PROTOCOL-TYPE\n\
             g             Stable  consumer\n\
             longer-group  -       x\n"
        );
    }
}
