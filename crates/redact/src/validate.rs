//! Checks that run on pattern candidates only: checksums (Luhn, IBAN mod-97), number
//! ranges (SSN areas, IP octets, phone digit counts), parsing (IPv6, JWT headers) and
//! randomness (credential values). Each takes the normalized haystack and the candidate
//! span and returns the span of the entity it confirms, which may be shorter than the
//! candidate, or `None`.
//!
//! A check may look at the byte before the candidate and at the one byte after it: the
//! streaming redactor only decides a candidate once the automaton has read that far.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Luhn checksum over ASCII digits.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    let remainder = sum % 10;
    remainder == 0
}

fn digits_of(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(u8::is_ascii_digit).collect()
}

fn byte_at(h: &[u8], i: usize) -> Option<u8> {
    h.get(i).copied()
}

fn before(h: &[u8], s: usize) -> Option<u8> {
    s.checked_sub(1).and_then(|i| byte_at(h, i))
}

/// Payment card: 13–19 digits, Luhn-valid. A grouped candidate with a short trailing group
/// (`4111 1111 1111 1111 12/26`) is first tried as its first four groups: 17- and 18-digit
/// cards are not issued, and a 19-digit one is rarely written in groups.
pub(crate) fn card(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let cand = &h[s..e];
    let digits = digits_of(cand);
    let grouped = cand.len() > 19 && !cand[4].is_ascii_digit();
    if grouped && digits.len() > 16 {
        let first_four = digits_of(&cand[..19]);
        if luhn(&first_four) {
            return Some((s, s + 19));
        }
        if digits.len() < 19 {
            return None;
        }
    }
    if (13..=19).contains(&digits.len()) && luhn(&digits) {
        return Some((s, e));
    }
    None
}

/// US SSN outside the ranges never issued: area 000, 666 and 900–999, group 00, serial
/// 0000, and the two numbers published in advertising.
pub(crate) fn ssn(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let d = digits_of(&h[s..e]);
    if d.len() != 9 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        d[r].iter()
            .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'))
    };
    let (area, group, serial) = (num(0..3), num(3..5), num(5..9));
    let valid = area != 0
        && area != 666
        && area < 900
        && group != 0
        && serial != 0
        && !(area == 78 && group == 5 && serial == 1120)
        && !(area == 219 && group == 9 && serial == 9999)
        && !(area == 123 && group == 45 && serial == 6789);
    valid.then_some((s, e))
}

/// IBAN length per country (ISO 13616 registry).
fn iban_length(country: &[u8]) -> Option<usize> {
    let len = match country {
        b"AD" => 24,
        b"AE" => 23,
        b"AL" => 28,
        b"AT" => 20,
        b"AZ" => 28,
        b"BA" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BR" => 29,
        b"BY" => 28,
        b"CH" => 21,
        b"CR" => 22,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DK" => 18,
        b"DO" => 28,
        b"EE" => 20,
        b"EG" => 29,
        b"ES" => 24,
        b"FI" => 18,
        b"FO" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GE" => 22,
        b"GI" => 23,
        b"GL" => 18,
        b"GR" => 27,
        b"GT" => 28,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IQ" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"JO" => 30,
        b"KW" => 30,
        b"KZ" => 20,
        b"LB" => 28,
        b"LC" => 32,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"MC" => 27,
        b"MD" => 24,
        b"ME" => 22,
        b"MK" => 19,
        b"MR" => 27,
        b"MT" => 31,
        b"MU" => 30,
        b"NL" => 18,
        b"NO" => 15,
        b"PK" => 24,
        b"PL" => 28,
        b"PS" => 29,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"RS" => 22,
        b"SA" => 24,
        b"SC" => 31,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"ST" => 25,
        b"SV" => 28,
        b"TL" => 23,
        b"TN" => 24,
        b"TR" => 26,
        b"UA" => 29,
        b"VA" => 22,
        b"VG" => 24,
        b"XK" => 20,
        _ => return None,
    };
    Some(len)
}

/// ISO 7064 mod 97-10 over an upper-case alphanumeric IBAN.
pub(crate) fn iban_mod97(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let rotated = iban[4..].iter().chain(&iban[..4]);
    let mut rem = 0u32;
    for &b in rotated {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// IBAN: known country, that country's length, mod-97. A candidate that runs on into
/// following groups is cut at the country's length if that falls between groups.
pub(crate) fn iban(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let want = iban_length(h.get(s..s + 2)?)?;
    let mut compact = Vec::with_capacity(34);
    let mut end = None;
    for (i, &b) in h[s..e].iter().enumerate() {
        if b == b' ' {
            continue;
        }
        compact.push(b);
        if compact.len() == want {
            end = Some(s + i + 1);
            break;
        }
    }
    let end = end?;
    if end < e && h[end] != b' ' {
        return None;
    }
    iban_mod97(&compact).then_some((s, end))
}

/// IPv4: four decimal octets up to 255 without leading zeros, not part of a longer dotted
/// run.
pub(crate) fn ipv4(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s) == Some(b'.') {
        return None;
    }
    let text = std::str::from_utf8(&h[s..e]).ok()?;
    if text.split('.').any(|p| p.len() > 1 && p.starts_with('0')) {
        return None;
    }
    text.parse::<Ipv4Addr>().ok().map(|_| (s, e))
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// IPv6: parses, has at least two non-empty groups and a decimal digit (which keeps
/// `Face::add`-style paths out), and does not touch letters, digits or colons on either
/// side. A single trailing colon is punctuation (`address fe80::1: assigned`).
pub(crate) fn ipv6(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| is_word(b) || b == b':') {
        return None;
    }
    if byte_at(h, e).is_some_and(|b| is_word(b) || b == b':') {
        return None;
    }
    let mut end = e;
    if e - s > 2 && h[e - 1] == b':' && h[e - 2] != b':' {
        end -= 1;
    }
    let text = std::str::from_utf8(&h[s..end]).ok()?;
    let groups = text.split(':').filter(|g| !g.is_empty()).count();
    if groups < 2 || !text.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<Ipv6Addr>().ok().map(|_| (s, end))
}

/// Digit groups of a phone candidate: `(end offset, digits)` per group, split at spaces,
/// dots and dashes.
fn phone_groups(h: &[u8], s: usize, e: usize) -> Vec<(usize, usize)> {
    let mut groups = Vec::new();
    let mut digits = 0;
    for (i, &b) in h.iter().enumerate().take(e).skip(s) {
        match b {
            b' ' | b'.' | b'-' => {
                if digits > 0 {
                    groups.push((i, digits));
                }
                digits = 0;
            }
            b if b.is_ascii_digit() => digits += 1,
            _ => {}
        }
    }
    if digits > 0 {
        groups.push((e, digits));
    }
    groups
}

/// Total digits (country code included) that numbers of a country code have; `None` for
/// codes not listed, which get E.164's general 8–15.
fn e164_lengths(digits: &[u8]) -> Option<(usize, usize)> {
    const CODES: &[(&[u8], usize, usize)] = &[
        (b"1", 11, 11),
        (b"7", 11, 11),
        (b"20", 12, 12),
        (b"27", 11, 11),
        (b"30", 12, 12),
        (b"31", 11, 11),
        (b"32", 10, 11),
        (b"33", 11, 11),
        (b"34", 11, 11),
        (b"36", 10, 11),
        (b"39", 10, 13),
        (b"40", 11, 11),
        (b"41", 11, 11),
        (b"43", 10, 13),
        (b"44", 11, 12),
        (b"45", 10, 10),
        (b"46", 9, 12),
        (b"47", 10, 10),
        (b"48", 11, 11),
        (b"49", 10, 14),
        (b"52", 12, 12),
        (b"55", 12, 13),
        (b"61", 11, 11),
        (b"64", 10, 11),
        (b"65", 10, 10),
        (b"81", 11, 12),
        (b"82", 10, 12),
        (b"86", 12, 13),
        (b"90", 12, 12),
        (b"91", 12, 12),
        (b"351", 12, 12),
        (b"353", 11, 12),
    ];
    CODES
        .iter()
        .find(|(code, _, _)| digits.starts_with(code))
        .map(|&(_, lo, hi)| (lo, hi))
}

/// Cuts trailing digit groups off a phone candidate until it has at most `max` digits, and
/// a final short group (one or two digits after a group of four or more, as in
/// `+49 30 73997747 12`) when what remains has at least `min`: a number written after a
/// phone number is not part of it. Returns the new end and digit count.
fn trim_phone(h: &[u8], s: usize, e: usize, min: usize, max: usize) -> Option<(usize, usize)> {
    let mut groups = phone_groups(h, s, e);
    let mut total: usize = groups.iter().map(|g| g.1).sum();
    while total > max {
        let (_, d) = groups.pop()?;
        total -= d;
    }
    if let [.., (_, prev), (_, last)] = groups[..] {
        if last <= 2 && prev >= 4 && total - last >= min {
            groups.pop();
            total -= last;
        }
    }
    let end = groups.last()?.0;
    (total >= min).then_some((end, total))
}

/// International number: `+`, then a country code and as many digits as numbers of that
/// country have (8–15 for codes not listed).
pub(crate) fn phone_intl(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let digits = digits_of(&h[s..e]);
    let (min, max) = e164_lengths(&digits).unwrap_or((8, 15));
    let (end, _) = trim_phone(h, s, e, min, max)?;
    if end == e && byte_at(h, e).is_some_and(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((s, end))
}

/// North American number: the pattern fixes the shape; here it must not be the middle of
/// a longer dash- or dot-joined code such as `ORD-555-123-4567`.
pub(crate) fn phone_nanp(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| matches!(b, b'-' | b'.' | b'/' | b'#')) {
        return None;
    }
    if byte_at(h, e).is_some_and(|b| matches!(b, b'-' | b'/')) {
        return None;
    }
    Some((s, e))
}

/// National number with a trunk `0`: 9–12 digits, not inside a longer joined code. Five
/// pairs (`01 23 45 67 89`) are a whole number; a pair after them is not part of it.
pub(crate) fn phone_national(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| matches!(b, b'-' | b'.' | b'/' | b'#' | b'+')) {
        return None;
    }
    let groups = phone_groups(h, s, e);
    let pairs = groups.iter().take_while(|g| g.1 == 2).count();
    let e = if pairs >= 5 { groups[4].0 } else { e };
    let (end, _) = trim_phone(h, s, e, 9, 12)?;
    if end == e && byte_at(h, e).is_some_and(|b| matches!(b, b'-' | b'/')) {
        return None;
    }
    Some((s, end))
}

/// E-mail: the local part neither starts nor ends with a dot nor holds two in a row, and
/// the address is not an image name such as `icon@2x.png`.
pub(crate) fn email(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let cand = &h[s..e];
    let at = cand.iter().position(|&b| b == b'@')?;
    let local = &cand[..at];
    let domain = &cand[at + 1..];
    if local.first() == Some(&b'.') || local.last() == Some(&b'.') {
        return None;
    }
    if local.windows(2).any(|w| w == b"..") {
        return None;
    }
    let first_label = domain.split(|&b| b == b'.').next()?;
    if first_label.len() >= 2
        && first_label
            .last()
            .is_some_and(|b| b.eq_ignore_ascii_case(&b'x'))
        && first_label[..first_label.len() - 1]
            .iter()
            .all(u8::is_ascii_digit)
    {
        return None;
    }
    let tld = domain.rsplit(|&b| b == b'.').next()?.to_ascii_lowercase();
    const FILE_EXTENSIONS: &[&[u8]] = &[
        b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"bmp", b"ico", b"tif", b"tiff", b"css",
        b"js", b"json", b"yaml", b"yml", b"html", b"txt", b"exe", b"dll",
    ];
    if FILE_EXTENSIONS.contains(&tld.as_slice()) {
        return None;
    }
    Some((s, e))
}

/// Shannon entropy of a byte string in bits per byte.
pub(crate) fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

fn char_classes(s: &[u8]) -> u32 {
    let mut lower = 0;
    let mut upper = 0;
    let mut digit = 0;
    let mut other = 0;
    for &b in s {
        match b {
            b'a'..=b'z' => lower = 1,
            b'A'..=b'Z' => upper = 1,
            b'0'..=b'9' => digit = 1,
            _ => other = 1,
        }
    }
    lower + upper + digit + other
}

/// Whether a credential-shaped value looks random rather than like a word, a number, a
/// placeholder or a reference to where the real value lives.
pub(crate) fn looks_random(value: &[u8]) -> bool {
    if value.len() < 8 {
        return false;
    }
    if char_classes(value) < 2 {
        return false;
    }
    if value
        .iter()
        .all(|b| b.is_ascii_uppercase() || *b == b'_' || b.is_ascii_digit())
        && value.iter().filter(|b| b.is_ascii_digit()).count() * 4 < value.len()
    {
        return false;
    }
    let lower = value.to_ascii_lowercase();
    const PLACEHOLDERS: &[&[u8]] = &[
        b"xxxx",
        b"****",
        b"....",
        b"----",
        b"____",
        b"environ",
        b"getenv",
        b"process.env",
        b"example",
        b"placeholder",
        b"changeme",
        b"redacted",
        b"your_",
        b"your-",
        b"<",
        b"${",
        b"secrets.",
        b"config.",
        b"settings.",
        b"os.",
        b"env.",
        b"vault",
    ];
    if PLACEHOLDERS
        .iter()
        .any(|p| lower.windows(p.len()).any(|w| w == *p))
    {
        return false;
    }
    let len = value.len() as f64;
    let threshold = (len.log2() - 0.35).min(3.0);
    entropy(value) >= threshold
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Provider token (`sk-…`, `ghp_…`, `xoxb-…`): not longer than its pattern allows, and its
/// body after the prefix mixes letters and digits with high entropy.
pub(crate) fn token(h: &[u8], s: usize, e: usize, prefix_len: usize) -> Option<(usize, usize)> {
    if byte_at(h, e).is_some_and(is_token_byte) {
        return None;
    }
    let mut end = e;
    while end > s && matches!(h[end - 1], b'-' | b'_') {
        end -= 1;
    }
    let body = h.get(s + prefix_len..end)?;
    let has_digit = body.iter().any(u8::is_ascii_digit);
    let has_alpha = body.iter().any(u8::is_ascii_alphabetic);
    (has_digit && has_alpha && entropy(body) >= 3.0).then_some((s, end))
}

/// AWS access key id: the pattern fixes the shape; reject runs of one repeated character.
pub(crate) fn aws_key(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let body = h.get(s + 4..e)?;
    let mut seen = [false; 256];
    let distinct = body
        .iter()
        .filter(|&&b| !std::mem::replace(&mut seen[usize::from(b)], true))
        .count();
    (distinct >= 6).then_some((s, e))
}

fn is_value_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/+=_.~!@#$%^&*-".contains(&b)
}

/// `key=value` credential: the span is the value alone, which must look random. The key
/// name is everything up to the first quote, space or separator; trailing `.`, `!` and `*`
/// are taken for sentence and markdown punctuation (a password ending in one of them keeps
/// that last character visible).
pub(crate) fn key_value(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if byte_at(h, e).is_some_and(is_value_byte) {
        return None;
    }
    let cand = &h[s..e];
    let mut i = cand
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))?;
    while i < cand.len() && matches!(cand[i], b'"' | b'\'' | b' ' | b'\t' | b':' | b'=' | b'>') {
        i += 1;
    }
    let mut end = cand.len();
    while end > i && matches!(cand[end - 1], b'.' | b'*' | b'!') {
        end -= 1;
    }
    let value = cand.get(i..end)?;
    looks_random(value).then_some((s + i, s + end))
}

/// `Bearer <token>`: the span is the token, which must look random; trailing dots are
/// sentence punctuation.
pub(crate) fn bearer(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if byte_at(h, e).is_some_and(|b| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b)) {
        return None;
    }
    let cand = &h[s..e];
    let start = 6 + cand[6..]
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    let mut end = cand.len();
    while end > start && cand[end - 1] == b'.' {
        end -= 1;
    }
    let value = cand.get(start..end)?;
    (looks_random(value) && value.len() >= 20).then_some((s + start, s + end))
}

fn base64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for &b in s {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// JWT opener: the header segment decodes to a JSON object naming `alg` or `typ`.
pub(crate) fn jwt(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let dot = h[s..e].iter().position(|&b| b == b'.')?;
    let header = base64url_decode(&h[s..s + dot])?;
    let ok = header.first() == Some(&b'{')
        && (header.windows(5).any(|w| w == b"\"alg\"")
            || header.windows(5).any(|w| w == b"\"typ\""));
    ok.then_some((s, e))
}

/// Base64 (standard or URL alphabet) decoding for the injection heuristics.
pub(crate) fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    base64url_decode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"378282246310005"));
        assert!(!luhn(b"4111111111111112"));
    }

    #[test]
    fn iban_known() {
        assert!(iban_mod97(b"DE89370400440532013000"));
        assert!(iban_mod97(b"GB82WEST12345698765432"));
        assert!(!iban_mod97(b"GB82WEST12345698765433"));
        let h = b"GB82 WEST 1234 5698 7654 32";
        assert_eq!(iban(h, 0, h.len()), Some((0, h.len())));
    }

    #[test]
    fn ssn_ranges() {
        let ok = b"123-45-6788";
        assert!(ssn(ok, 0, ok.len()).is_some());
        for bad in [
            &b"000-12-3456"[..],
            b"666-12-3456",
            b"912-12-3456",
            b"123-00-4567",
            b"123-45-0000",
        ] {
            assert!(
                ssn(bad, 0, bad.len()).is_none(),
                "{:?}",
                std::str::from_utf8(bad)
            );
        }
    }

    #[test]
    fn randomness() {
        assert!(looks_random(b"Xy8#kk29!aQ"));
        assert!(looks_random(b"a8f3k2LmQ9zT"));
        assert!(!looks_random(b"password"));
        assert!(!looks_random(b"YOUR_API_KEY"));
        assert!(!looks_random(b"12345678"));
        assert!(!looks_random(b"os.environ"));
    }

    #[test]
    fn jwt_header() {
        let t = b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIi";
        assert!(jwt(t, 0, t.len()).is_some());
    }
}
