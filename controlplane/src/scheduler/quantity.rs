//! Resource quantities (`500m`, `1.5Gi`, `2e3`) as the scheduler counts
//! them: cpu in millicores, memory in bytes.
//!
//! Kubernetes' `MilliValue()` and `Value()` round up, so a request of
//! `0.1m` cpu still takes one millicore and `1.5` bytes take two; the same
//! rounding is used here, or a pod that Kubernetes would refuse could fit.

/// Why text is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a quantity (e.g. 2, 500m, 16Gi, 1e3)")]
pub struct QuantityError(pub String);

/// `text` scaled by 10^`scale` and rounded up: scale 3 gives millis, 0
/// whole units. Values past `i64` saturate.
fn scaled(text: &str, scale: u32) -> Result<i64, QuantityError> {
    let invalid = || QuantityError(text.to_owned());
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = rest
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(invalid());
    }

    // The value is mantissa × 10^exponent10 × 2^exponent2.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let mut exponent10: i64 = -(fraction.len() as i64);
    let mut exponent2: u32 = 0;
    match suffix {
        "" => {}
        "n" => exponent10 -= 9,
        "u" => exponent10 -= 6,
        "m" => exponent10 -= 3,
        "k" => exponent10 += 3,
        "M" => exponent10 += 6,
        "G" => exponent10 += 9,
        "T" => exponent10 += 12,
        "P" => exponent10 += 15,
        "E" => exponent10 += 18,
        "Ki" => exponent2 = 10,
        "Mi" => exponent2 = 20,
        "Gi" => exponent2 = 30,
        "Ti" => exponent2 = 40,
        "Pi" => exponent2 = 50,
        "Ei" => exponent2 = 60,
        other => {
            let exponent = other
                .strip_prefix(['e', 'E'])
                .filter(|e| !e.is_empty())
                .and_then(|e| e.parse::<i64>().ok())
                .ok_or_else(invalid)?;
            exponent10 = exponent10.saturating_add(exponent);
        }
    }
    exponent10 = exponent10.saturating_add(i64::from(scale));
    if digits.is_empty() {
        return Ok(0);
    }
    // More than 38 significant digits cannot be exact in i128; no real
    // request needs them.
    let Ok(mantissa) = digits.parse::<i128>() else {
        return Ok(if negative { i64::MIN } else { i64::MAX });
    };
    let saturated = if negative { i64::MIN } else { i64::MAX };
    let mut value = match mantissa.checked_mul(1i128 << exponent2) {
        Some(value) => value,
        None => return Ok(saturated),
    };
    if exponent10 >= 0 {
        for _ in 0..exponent10 {
            value = match value.checked_mul(10) {
                Some(value) if value <= i128::from(i64::MAX) => value,
                _ => return Ok(saturated),
            };
        }
    } else {
        let mut divisor: i128 = 1;
        for _ in 0..(-exponent10) {
            divisor = match divisor.checked_mul(10) {
                Some(divisor) => divisor,
                // Smaller than any unit: rounds up to one.
                None => return Ok(if negative { 0 } else { 1 }),
            };
            if divisor > value.saturating_mul(10) {
                break;
            }
        }
        let quotient = value / divisor;
        value = if value % divisor == 0 {
            quotient
        } else if negative {
            // Rounding up a negative number moves it towards zero.
            quotient
        } else {
            quotient + 1
        };
    }
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    Ok(if negative { -value } else { value })
}

/// A quantity in thousandths, rounded up (cpu in millicores).
pub fn milli_value(text: &str) -> Result<i64, QuantityError> {
    scaled(text.trim(), 3)
}

/// A quantity in whole units, rounded up (memory in bytes, pod counts).
pub fn value(text: &str) -> Result<i64, QuantityError> {
    scaled(text.trim(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_millicores() {
        for (text, millis) in [
            ("1", 1000),
            ("500m", 500),
            ("0.5", 500),
            ("1.5", 1500),
            ("2k", 2_000_000),
            ("100u", 1),
            ("0.1m", 1),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("0", 0),
            ("+3", 3000),
            (".5", 500),
            ("5.", 5000),
        ] {
            assert_eq!(milli_value(text), Ok(millis), "{text}");
        }
    }

    #[test]
    fn memory_in_bytes() {
        for (text, bytes) in [
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("129M", 129_000_000),
            ("123Mi", 128_974_848),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("4030364Ki", 4_030_364 * 1024),
            ("1E", 1_000_000_000_000_000_000),
            ("1.5", 2),
        ] {
            assert_eq!(value(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn huge_values_saturate_instead_of_wrapping() {
        assert_eq!(value("9Ei"), Ok(i64::MAX));
        assert_eq!(value("1e30"), Ok(i64::MAX));
        assert_eq!(milli_value("1e-40"), Ok(1));
    }

    #[test]
    fn malformed_text_is_refused() {
        for text in ["", "lots", "1.2.3", "1Qi", "e3", "1e", "m", "1 Gi"] {
            assert!(value(text).is_err(), "{text:?} was accepted");
        }
    }
}
