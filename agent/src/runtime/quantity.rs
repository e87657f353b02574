//! Kubernetes resource quantities (`100m`, `0.5`, `128Mi`, `1G`, `2e3`),
//! as far as the pod runtime needs them: CPU in millicores and memory in
//! bytes, rounded up as Kubernetes rounds them.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a resource quantity")]
pub struct QuantityError(pub String);

/// Parses a quantity into a value scaled by `10^scale`, rounded up
/// (scale 3 gives millis, scale 0 gives units).
fn scaled(text: &str, scale: i32) -> Result<i128, QuantityError> {
    let bad = || QuantityError(text.to_owned());
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.starts_with('-') {
        return Err(bad());
    }
    let number = number.strip_prefix('+').unwrap_or(number);
    let (binary, exponent): (i128, i32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        other => {
            let digits = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or_else(bad)?;
            (1, digits.parse::<i32>().map_err(|_| bad())?)
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if !whole
        .chars()
        .chain(fraction.chars())
        .all(|c| c.is_ascii_digit())
        || (whole.is_empty() && fraction.is_empty())
    {
        return Err(bad());
    }
    // mantissa * 10^(exponent - fraction digits) * binary * 10^scale
    let digits = format!("{whole}{fraction}");
    let mantissa: i128 = digits.trim_start_matches('0').parse().or_else(|_| {
        if digits.chars().all(|c| c == '0') {
            Ok(0)
        } else {
            Err(bad())
        }
    })?;
    let power = exponent + scale - fraction.len() as i32;
    let value = mantissa.checked_mul(binary).ok_or_else(bad)?;
    if power >= 0 {
        value
            .checked_mul(10i128.checked_pow(power as u32).ok_or_else(bad)?)
            .ok_or_else(bad)
    } else {
        let divisor = 10i128.checked_pow((-power) as u32).ok_or_else(bad)?;
        // Round up: 0.1m of CPU is still 1m.
        Ok((value + divisor - 1) / divisor)
    }
}

/// CPU in millicores.
pub fn millicores(text: &str) -> Result<i64, QuantityError> {
    scaled(text, 3).and_then(|v| i64::try_from(v).map_err(|_| QuantityError(text.to_owned())))
}

/// Memory (or any count) in units.
pub fn bytes(text: &str) -> Result<i64, QuantityError> {
    scaled(text, 0).and_then(|v| i64::try_from(v).map_err(|_| QuantityError(text.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_millicores() {
        assert_eq!(millicores("100m"), Ok(100));
        assert_eq!(millicores("0.5"), Ok(500));
        assert_eq!(millicores("2"), Ok(2000));
        assert_eq!(millicores(".25"), Ok(250));
        assert_eq!(millicores("1e-4"), Ok(1), "rounded up");
        assert_eq!(millicores("250000u"), Ok(250));
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(bytes("128Mi"), Ok(128 << 20));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert_eq!(bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(bytes("2e3"), Ok(2000));
        assert_eq!(bytes("64"), Ok(64));
        assert_eq!(bytes("0"), Ok(0));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in ["", "Mi", "-1", "1.2.3", "12Q", "1ee3", "abc"] {
            assert!(bytes(bad).is_err(), "{bad}");
        }
    }
}
