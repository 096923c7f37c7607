//! `numeric` as decimal text: the binary wire format (base-10000 digits, a weight, a
//! sign and a display scale) to and from the string PostgreSQL itself would print.

use std::fmt::Write as _;

const POSITIVE: u16 = 0x0000;
const NEGATIVE: u16 = 0x4000;
const NAN: u16 = 0xC000;
const PINF: u16 = 0xD000;
const NINF: u16 = 0xF000;
/// The largest display scale PostgreSQL produces.
const MAX_DSCALE: u16 = 0x3FFF;

fn read_u16(raw: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*raw.get(at)?, *raw.get(at + 1)?]))
}

/// Decodes a binary `numeric` into the text PostgreSQL prints (`-12.3400`, `NaN`,
/// `Infinity`).
pub(crate) fn decode(raw: &[u8]) -> Result<String, String> {
    let header = |at| read_u16(raw, at).ok_or_else(|| "shorter than its header".to_string());
    let ndigits = header(0)? as i16;
    let weight = header(2)? as i16;
    let sign = header(4)?;
    let dscale = header(6)?;
    if ndigits < 0 {
        return Err(format!("negative digit count {ndigits}"));
    }
    if raw.len() != 8 + 2 * ndigits as usize {
        return Err(format!(
            "{} bytes for {ndigits} digits (expected {})",
            raw.len(),
            8 + 2 * ndigits as usize
        ));
    }
    match sign {
        NAN => return Ok("NaN".into()),
        PINF => return Ok("Infinity".into()),
        NINF => return Ok("-Infinity".into()),
        POSITIVE | NEGATIVE => {}
        other => return Err(format!("unknown sign word {other:#06x}")),
    }
    if dscale > MAX_DSCALE {
        return Err(format!("display scale {dscale} above {MAX_DSCALE}"));
    }
    let mut digits = Vec::with_capacity(ndigits as usize);
    for i in 0..ndigits as usize {
        let d = read_u16(raw, 8 + 2 * i).ok_or("truncated digits")?;
        if d > 9999 {
            return Err(format!("digit {d} is not below 10000"));
        }
        digits.push(d);
    }
    let digit = |i: i32| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let weight = i32::from(weight);
    let mut out = String::new();
    if sign == NEGATIVE && !digits.is_empty() {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                let _ = write!(out, "{}", digit(i));
            } else {
                let _ = write!(out, "{:04}", digit(i));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let start = out.len();
        let mut i = weight + 1;
        while out.len() - start < usize::from(dscale) {
            let _ = write!(out, "{:04}", digit(i));
            i += 1;
        }
        out.truncate(start + usize::from(dscale));
    }
    Ok(out)
}

/// Encodes decimal text (`-12.34`, `NaN`, `Infinity`) as a binary `numeric`.
pub(crate) fn encode(text: &str, buf: &mut Vec<u8>) -> Result<(), String> {
    let special = |sign: u16, buf: &mut Vec<u8>| {
        for word in [0u16, 0, sign, 0] {
            buf.extend_from_slice(&word.to_be_bytes());
        }
    };
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("nan") {
        special(NAN, buf);
        return Ok(());
    }
    if trimmed.eq_ignore_ascii_case("infinity") || trimmed.eq_ignore_ascii_case("+infinity") {
        special(PINF, buf);
        return Ok(());
    }
    if trimmed.eq_ignore_ascii_case("-infinity") {
        special(NINF, buf);
        return Ok(());
    }
    let (negative, unsigned) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return Err(format!(
            "{text:?} is not a plain decimal number (digits, an optional sign and point; NaN, Infinity)"
        ));
    }
    let dscale = u16::try_from(frac_part.len())
        .ok()
        .filter(|&d| d <= MAX_DSCALE)
        .ok_or_else(|| format!("more than {MAX_DSCALE} digits after the point"))?;
    let int_part = int_part.trim_start_matches('0');
    // Pad the integer part on the left and the fraction on the right to whole groups.
    let int_pad = (4 - int_part.len() % 4) % 4;
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let padded: Vec<u8> = std::iter::repeat_n(b'0', int_pad)
        .chain(int_part.bytes())
        .chain(frac_part.bytes())
        .chain(std::iter::repeat_n(b'0', frac_pad))
        .collect();
    let int_groups = (int_pad + int_part.len()) / 4;
    let mut groups: Vec<u16> = padded
        .chunks(4)
        .map(|c| c.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0')))
        .collect();
    let mut weight = int_groups as i64 - 1;
    let leading = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..leading);
    weight -= leading as i64;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let ndigits = i16::try_from(groups.len()).map_err(|_| "too many digits".to_string())?;
    let weight = i16::try_from(weight).map_err(|_| "the number is too large".to_string())?;
    let sign = if negative && !groups.is_empty() {
        NEGATIVE
    } else {
        POSITIVE
    };
    buf.extend_from_slice(&ndigits.to_be_bytes());
    buf.extend_from_slice(&weight.to_be_bytes());
    buf.extend_from_slice(&sign.to_be_bytes());
    buf.extend_from_slice(&dscale.to_be_bytes());
    for g in groups {
        buf.extend_from_slice(&g.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let mut buf = Vec::new();
        encode(text, &mut buf).unwrap();
        decode(&buf).unwrap()
    }

    #[test]
    fn decimal_text_survives_the_binary_form() {
        for (input, printed) in [
            ("0", "0"),
            ("0.00", "0.00"),
            ("-0.5", "-0.5"),
            ("12.3400", "12.3400"),
            ("10000", "10000"),
            ("123456789.000000001", "123456789.000000001"),
            ("0.0001", "0.0001"),
            ("-99999999999999999999.99", "-99999999999999999999.99"),
            ("007", "7"),
            (".5", "0.5"),
            ("NaN", "NaN"),
            ("-Infinity", "-Infinity"),
        ] {
            assert_eq!(round_trip(input), printed, "{input}");
        }
    }

    #[test]
    fn hostile_binary_numerics_are_refused() {
        assert!(decode(&[0, 1]).is_err());
        assert!(decode(&[0, 2, 0, 0, 0, 0, 0, 0, 0, 1]).is_err()); // truncated digits
        assert!(decode(&[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10]).is_err()); // digit 10000
        assert!(decode(&[0xff, 0xff, 0, 0, 0, 0, 0, 0]).is_err()); // negative count
        assert!(decode(&[0, 0, 0, 0, 0x12, 0x34, 0, 0]).is_err()); // unknown sign
    }

    #[test]
    fn non_decimal_text_is_refused() {
        for bad in ["", "-", "1e5", "1.2.3", "abc", "1 000"] {
            assert!(encode(bad, &mut Vec::new()).is_err(), "{bad}");
        }
    }
}
