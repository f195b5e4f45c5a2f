//! RFC 3339 / XEP-0082 timestamps without a date library: UTC only, which is all XMPP needs.

/// `YYYY-MM-DDThh:mm:ssZ` for seconds since the Unix epoch.
pub fn xep0082(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the Unix epoch for a XEP-0082 DateTime (`YYYY-MM-DDThh:mm:ss[.fff](Z|±hh:mm)`);
/// fractions of a second are dropped. `None` for anything else, including impossible dates.
pub fn parse_xep0082(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest.as_bytes() {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (two_digits(&rest[1..3])?, two_digits(&rest[4..6])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

fn two_digits(s: &str) -> Option<i64> {
    if s.len() != 2 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A proleptic Gregorian date to days since 1970-01-01 (the inverse of `civil_from_days`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_known_instants() {
        assert_eq!(super::xep0082(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::xep0082(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            super::xep0082(1_795_392_000 + 3_723),
            "2026-11-23T01:02:03Z"
        );
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for t in [0, 951_782_400, 1_795_392_000 + 3_723, -86_400] {
            assert_eq!(super::parse_xep0082(&super::xep0082(t)), Some(t));
        }
        assert_eq!(
            super::parse_xep0082("1970-01-01T01:00:00.123+01:00"),
            Some(0)
        );
        assert_eq!(
            super::parse_xep0082("1970-01-01T00:00:00-00:30"),
            Some(1800)
        );
        for bad in [
            "",
            "2026-02-30T00:00:00Z",
            "2026-11-23 01:02:03Z",
            "2026-11-23T01:02:03",
            "2026-11-23T25:02:03Z",
            "2026-11-23T01:02:03.Z",
            "2026-11-23T01:02:03+1:00",
            "+026-11-23T01:02:03Z",
        ] {
            assert_eq!(super::parse_xep0082(bad), None, "{bad}");
        }
    }
}
