//! Parsers for raftctl's option values.

use std::time::Duration;

/// A duration like `5s`, `500ms`, `2m` or `1.5` (seconds): positive and under a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 5s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("'{s}': unit must be ms, s or m")),
    };
    if !(secs > 0.0 && secs < 86_400.0) {
        return Err(format!("'{s}' must be positive and under a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A range `MIN..MAX` of whole numbers, MIN at most MAX.
pub fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("'{s}' is not MIN..MAX"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("'{a}' is not a number"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("'{b}' is not a number"))?;
    if a > b {
        return Err(format!("{a}..{b}: MIN is above MAX"));
    }
    Ok((a, b))
}
