//! Validation and normalization of indicator values, one rule per kind.
//!
//! Owns: deciding whether a published value is a well-formed indicator of its
//! kind, and turning it into the single canonical form the hub stores, matches
//! and shares, so that `098765 43210` and `+91-98765-43210` are one indicator.
//!
//! Pure: no I/O, no clock, no global state. It must never panic on any input;
//! the property tests at the bottom feed it arbitrary strings to check that,
//! and check that a canonical value normalizes to itself.
//!
//! Canonical forms:
//!
//! | kind           | canonical form                               | example                    |
//! |----------------|----------------------------------------------|----------------------------|
//! | `PHONE_NUMBER` | E.164, `+` and digits                        | `+919876543210`            |
//! | `IMEI`         | 15 digits, Luhn check digit last             | `490154203237518`          |
//! | `URL`          | http(s) URL as `url` serializes it, no `#…`  | `http://example.com/login` |
//! | `DOMAIN`       | lowercase ASCII (punycode), no trailing dot  | `xn--bcher-kva.example`    |
//! | `IP_ADDRESS`   | std display; IPv4-mapped IPv6 becomes IPv4   | `2001:db8::1`              |
//! | `UPI_ID`       | lowercase `handle@psp`                       | `name@okaxis`              |
//! | `BANK_ACCOUNT` | `IFSC:ACCOUNT`, IFSC uppercase               | `SBIN0001234:012345678901` |
//! | `EMAIL`        | lowercase `local@domain`, domain as `DOMAIN` | `name@example.com`         |
//! | `SMS_HEADER`   | uppercase 6-char header, optional suffix     | `HDFCBK-S`                 |
//!
//! Every canonical form is at most [`MAX_VALUE_LEN`] bytes long.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

use crate::proto::IndicatorKind;

/// Why a value was refused: the problem and the expected form, for a clear INVALID_ARGUMENT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub problem: String,
    pub expected: &'static str,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; expected {}", self.problem, self.expected)
    }
}

impl std::error::Error for Invalid {}

/// Longest raw value accepted, in bytes, for any kind.
pub const MAX_VALUE_LEN: usize = 2048;

const EXPECTED_KIND: &str =
    "one of PHONE_NUMBER, IMEI, URL, DOMAIN, IP_ADDRESS, UPI_ID, BANK_ACCOUNT, EMAIL, SMS_HEADER";
const EXPECTED_PHONE: &str = "a phone number in E.164 form such as +919876543210, \
     or a 10-digit Indian mobile number such as 9876543210";
const EXPECTED_IMEI: &str = "a 15-digit IMEI whose last digit is the Luhn check digit \
     of the first 14, such as 490154203237518, or a 16-digit IMEISV";
const EXPECTED_URL: &str = "an http or https URL with a host, such as https://example.com/login";
const EXPECTED_DOMAIN: &str = "a domain name of at least two labels, such as example.com";
const EXPECTED_IP: &str = "a single IPv4 or IPv6 address, such as 203.0.113.7 or 2001:db8::1";
const EXPECTED_UPI: &str = "a UPI ID such as name@okaxis: a handle of 2-256 letters, digits, \
     '.', '_' or '-', then '@', then a PSP handle of 2-64 letters or digits";
const EXPECTED_BANK: &str = "an IFSC code and an account number such as \
     SBIN0001234:12345678901 (IFSC: 4 letters, the digit 0, 6 letters or digits; \
     account: 9-18 digits)";
const EXPECTED_EMAIL: &str = "an email address such as name@example.com";
const EXPECTED_SMS: &str = "a 6-character DLT sender header of letters or digits such as \
     HDFCBK, optionally with a 2-letter operator prefix (VM-HDFCBK) and a -P, -S, -T or -G \
     suffix (HDFCBK-S)";

/// Fewest digits, country code included, of an international number.
const E164_MIN_DIGITS: usize = 8;
/// Most digits, country code included, that E.164 allows.
const E164_MAX_DIGITS: usize = 15;
/// Longest domain name in ASCII (punycode) form, without the trailing dot.
const DOMAIN_MAX_LEN: usize = 253;
/// Longest label of a domain name.
const LABEL_MAX_LEN: usize = 63;
/// Longest email address (RFC 5321 path limit less the angle brackets).
const EMAIL_MAX_LEN: usize = 254;
/// Longest local part of an email address, in bytes.
const EMAIL_LOCAL_MAX_LEN: usize = 64;
/// Characters quoted from a value in a problem text, at most.
const QUOTE_MAX_CHARS: usize = 40;

/// One kind's rule: takes the trimmed, control-free value, returns its canonical form.
type Rule = fn(&str) -> Result<String, Invalid>;

/// Validates `raw` as an indicator of `kind` and returns its canonical form.
///
/// The canonical form of a canonical form is itself, and is never longer
/// than [`MAX_VALUE_LEN`] bytes.
///
/// # Errors
///
/// [`Invalid`] when `kind` is unspecified, or `raw` is empty, too long,
/// holds control characters or breaks the kind's rule (see the module docs).
pub fn normalize(kind: IndicatorKind, raw: &str) -> Result<String, Invalid> {
    let (rule, expected): (Rule, &'static str) = match kind {
        IndicatorKind::Unspecified => {
            return Err(invalid("indicator kind is unspecified", EXPECTED_KIND));
        }
        IndicatorKind::PhoneNumber => (phone_number, EXPECTED_PHONE),
        IndicatorKind::Imei => (imei, EXPECTED_IMEI),
        IndicatorKind::Url => (url, EXPECTED_URL),
        IndicatorKind::Domain => (domain, EXPECTED_DOMAIN),
        IndicatorKind::IpAddress => (ip_address, EXPECTED_IP),
        IndicatorKind::UpiId => (upi_id, EXPECTED_UPI),
        IndicatorKind::BankAccount => (bank_account, EXPECTED_BANK),
        IndicatorKind::Email => (email, EXPECTED_EMAIL),
        IndicatorKind::SmsHeader => (sms_header, EXPECTED_SMS),
    };
    let value = common_checks(raw, expected)?;
    let canonical = rule(value)?;
    // A canonical form can be longer than its input (a URL gains `http://` and
    // percent-encoding); refusing it here keeps every accepted value
    // re-acceptable, so normalization stays idempotent.
    if canonical.len() > MAX_VALUE_LEN {
        return Err(invalid(
            format!(
                "is {} bytes long once normalized, over the limit of {MAX_VALUE_LEN} bytes",
                canonical.len()
            ),
            expected,
        ));
    }
    Ok(canonical)
}

/// Checks shared by every kind: length limit, trimming, emptiness, control characters.
fn common_checks<'a>(raw: &'a str, expected: &'static str) -> Result<&'a str, Invalid> {
    if raw.len() > MAX_VALUE_LEN {
        return Err(invalid(
            format!(
                "is {} bytes long, over the limit of {MAX_VALUE_LEN} bytes",
                raw.len()
            ),
            expected,
        ));
    }
    let value = raw.trim();
    if value.is_empty() {
        return Err(invalid("is empty", expected));
    }
    if let Some(c) = value.chars().find(|&c| is_forbidden_control(c)) {
        return Err(invalid(
            format!("contains the control character {}", describe(c)),
            expected,
        ));
    }
    Ok(value)
}

/// Control characters (Unicode `Cc`) and the invisible bidirectional
/// formatting characters, which can make a value display as something else.
fn is_forbidden_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

// ---------------------------------------------------------------- PHONE_NUMBER

/// `PHONE_NUMBER`: E.164, `+` then 8-15 digits; Indian numbers are `+91` and a
/// 10-digit mobile number starting with 6-9.
///
/// Accepted input: digits with the separators space, `-`, `.`, `(` and `)`
/// (any whitespace and Unicode dash too),
/// and either a leading `+` or `00` before the country code (international
/// form), or no country code (a 10-digit Indian mobile number, optionally
/// with a single trunk `0`), or a bare `91` and 10 digits.
fn phone_number(value: &str) -> Result<String, Invalid> {
    let (plus, digits) = phone_digits(value)?;
    if digits.is_empty() {
        return Err(invalid("contains no digits", EXPECTED_PHONE));
    }
    if plus {
        international_number(&digits)
    } else if let Some(rest) = digits.strip_prefix("00") {
        international_number(rest)
    } else {
        national_number(&digits)
    }
}

/// Splits a phone number into "had a leading `+`" and its digits, dropping separators.
fn phone_digits(value: &str) -> Result<(bool, String), Invalid> {
    let mut plus = false;
    let mut digits = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '0'..='9' => digits.push(c),
            c if is_dash_or_space(c) || matches!(c, '.' | '(' | ')') => {}
            '+' if !plus && digits.is_empty() => plus = true,
            '+' => {
                return Err(invalid(
                    "has a '+' that is not at the start; '+' may only come once, before the country code",
                    EXPECTED_PHONE,
                ));
            }
            c if c.is_alphabetic() => {
                return Err(invalid(
                    format!(
                        "contains the letter {}; phone numbers are digits only",
                        describe(c)
                    ),
                    EXPECTED_PHONE,
                ));
            }
            c => {
                return Err(invalid(
                    format!(
                        "contains {}; only digits, a leading '+' and the separators \
                         space, '-', '.', '(' and ')' are allowed",
                        describe(c)
                    ),
                    EXPECTED_PHONE,
                ));
            }
        }
    }
    Ok((plus, digits))
}

/// A number written with its country code (after `+` or `00`).
fn international_number(digits: &str) -> Result<String, Invalid> {
    if let Some(subscriber) = digits.strip_prefix("91") {
        return indian_mobile(subscriber);
    }
    if digits.starts_with('0') {
        return Err(invalid(
            "has a country code starting with 0; country codes start with 1-9",
            EXPECTED_PHONE,
        ));
    }
    let n = digits.len();
    if !(E164_MIN_DIGITS..=E164_MAX_DIGITS).contains(&n) {
        return Err(invalid(
            format!(
                "has {n} digits; international numbers have {E164_MIN_DIGITS} to \
                 {E164_MAX_DIGITS} digits including the country code"
            ),
            EXPECTED_PHONE,
        ));
    }
    Ok(format!("+{digits}"))
}

/// A number written without `+` or `00`: only Indian numbers are accepted so,
/// as 10 digits, a trunk `0` and 10 digits, or `91` and 10 digits.
fn national_number(digits: &str) -> Result<String, Invalid> {
    let subscriber = match digits.len() {
        10 => Some(digits),
        11 => digits.strip_prefix('0'),
        12 => digits.strip_prefix("91"),
        _ => None,
    };
    match subscriber {
        Some(subscriber) => indian_mobile(subscriber),
        None => Err(invalid(
            format!(
                "has {} digits and no country code; write an Indian mobile number as its \
                 10 digits and any other number in international form, with '+' or '00' \
                 and the country code",
                digits.len()
            ),
            EXPECTED_PHONE,
        )),
    }
}

/// The part after `+91`: must be a 10-digit mobile number starting with 6-9.
fn indian_mobile(subscriber: &str) -> Result<String, Invalid> {
    let problem = if subscriber.len() != 10 {
        format!("the Indian number has {} digits", subscriber.len())
    } else if subscriber.starts_with(['6', '7', '8', '9']) {
        return Ok(format!("+91{subscriber}"));
    } else {
        // `subscriber` is 10 ASCII digits here, so `..1` is its first digit.
        format!(
            "the Indian number starts with {}",
            subscriber.get(..1).unwrap_or_default()
        )
    };
    Err(invalid(
        format!("{problem}; Indian mobile numbers have 10 digits after +91 starting with 6-9"),
        EXPECTED_PHONE,
    ))
}

// ------------------------------------------------------------------------ IMEI

/// `IMEI`: 15 digits whose last is the Luhn check digit of the first 14.
/// A 16-digit IMEISV maps to its IMEI: the first 14 digits and their check
/// digit (the IMEISV's last two digits are a software version).
/// Separators (whitespace, dashes, `/`) are dropped.
fn imei(value: &str) -> Result<String, Invalid> {
    let digits = imei_digits(value)?;
    let (body, tail) = match digits.split_at_checked(14) {
        Some((body, tail)) if (1..=2).contains(&tail.len()) => (body, tail),
        _ => return Err(imei_length(digits.len())),
    };
    if body.bytes().all(|b| b == b'0') {
        return Err(invalid(
            "is all zeros, a placeholder rather than a real IMEI",
            EXPECTED_IMEI,
        ));
    }
    let check = luhn_check_digit(body);
    match tail.len() {
        1 if tail.starts_with(check) => Ok(digits),
        1 => Err(invalid(
            format!(
                "has the check digit {tail} but the Luhn check digit of its first 14 digits is {check}"
            ),
            EXPECTED_IMEI,
        )),
        // An IMEISV: its last two digits are the software version.
        _ => Ok(format!("{body}{check}")),
    }
}

/// The digits of an IMEI, separators dropped.
fn imei_digits(value: &str) -> Result<String, Invalid> {
    let mut digits = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '0'..='9' => digits.push(c),
            c if is_dash_or_space(c) || c == '/' => {}
            c => {
                return Err(invalid(
                    format!(
                        "contains {}; an IMEI is digits only, optionally separated by \
                         space, '-' or '/'",
                        describe(c)
                    ),
                    EXPECTED_IMEI,
                ));
            }
        }
    }
    Ok(digits)
}

fn imei_length(n: usize) -> Invalid {
    invalid(
        format!("has {n} digits; an IMEI has 15 digits and an IMEISV 16"),
        EXPECTED_IMEI,
    )
}

/// The Luhn check digit of `body`, a string of ASCII digits (the rightmost
/// digit of `body` is doubled, then every second one leftwards).
fn luhn_check_digit(body: &str) -> char {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b.wrapping_sub(b'0'));
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    let check = (10 - sum % 10) % 10;
    // `check` is 0..=9, so from_digit always succeeds; '0' is unreachable.
    char::from_digit(check, 10).unwrap_or('0')
}

// ------------------------------------------------------------------------- URL

/// `URL`: an http or https URL with a host, as the `url` crate serializes it
/// (scheme and host lowercased, IDN host in punycode, default port dropped,
/// path and query percent-encoded), without its fragment. A value without a
/// scheme is taken as `http://` + value.
fn url(value: &str) -> Result<String, Invalid> {
    let with_scheme;
    let text = if has_scheme(value) {
        value
    } else {
        with_scheme = format!("http://{value}");
        &with_scheme
    };
    let mut parsed =
        Url::parse(text).map_err(|e| invalid(format!("is not a valid URL: {e}"), EXPECTED_URL))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(
            format!(
                "has the scheme {}; only http and https URLs are accepted",
                quoted(parsed.scheme())
            ),
            EXPECTED_URL,
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host", EXPECTED_URL));
    }
    parsed.set_fragment(None);
    Ok(parsed.into())
}

/// Whether `value` begins with a URI scheme (`ALPHA *(ALPHA / DIGIT / + / - / .)`
/// and `:`), unless what follows the colon is a port number, as in
/// `example.com:8080/path`.
fn has_scheme(value: &str) -> bool {
    let Some((scheme, rest)) = value.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.starts_with(|c: char| c.is_ascii_digit())
}

// ---------------------------------------------------------------------- DOMAIN

/// `DOMAIN`: lowercase ASCII, internationalized labels in punycode (IDNA via
/// `url::Host`), one trailing dot dropped; at least two labels of 1-63
/// letters, digits or `-` (not first or last), at most 253 characters.
fn domain(value: &str) -> Result<String, Invalid> {
    if is_ip_address(value) {
        return Err(invalid(
            "is an IP address; publish it as IP_ADDRESS",
            EXPECTED_DOMAIN,
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|&c| matches!(c, '/' | ':') || c.is_whitespace())
    {
        return Err(invalid(
            format!(
                "contains {}; this looks like a URL; publish it as URL",
                describe(c)
            ),
            EXPECTED_DOMAIN,
        ));
    }
    if value.contains('@') {
        return Err(invalid(
            "contains '@'; publish email addresses as EMAIL and UPI IDs as UPI_ID",
            EXPECTED_DOMAIN,
        ));
    }
    domain_name(value)
}

/// IDNA-encodes `value` and checks it as a DNS name; shared by `DOMAIN` and `EMAIL`.
fn domain_name(value: &str) -> Result<String, Invalid> {
    let ascii = match Host::parse(value) {
        Ok(Host::Domain(ascii)) => ascii.to_ascii_lowercase(),
        Ok(Host::Ipv4(_) | Host::Ipv6(_)) => {
            return Err(invalid(
                "is an IP address, not a domain name",
                EXPECTED_DOMAIN,
            ));
        }
        Err(e) => {
            return Err(invalid(
                format!("is not a valid domain name: {e}"),
                EXPECTED_DOMAIN,
            ));
        }
    };
    let name = ascii.strip_suffix('.').unwrap_or(&ascii);
    check_dns_name(name)?;
    Ok(name.to_owned())
}

/// Whether `value` is an IP address, IPv6 optionally in brackets.
fn is_ip_address(value: &str) -> bool {
    value.parse::<IpAddr>().is_ok()
        || value
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .is_some_and(|v| v.parse::<Ipv6Addr>().is_ok())
}

/// Checks the DNS rules on an ASCII, lowercase domain name without trailing dot.
fn check_dns_name(name: &str) -> Result<(), Invalid> {
    if name.len() > DOMAIN_MAX_LEN {
        return Err(invalid(
            format!(
                "is {} characters long in ASCII form; domain names have at most {DOMAIN_MAX_LEN}",
                name.len()
            ),
            EXPECTED_DOMAIN,
        ));
    }
    if !name.contains('.') {
        return Err(invalid(
            format!(
                "has the single label {}; a domain needs at least two, such as example.com",
                quoted(name)
            ),
            EXPECTED_DOMAIN,
        ));
    }
    name.split('.').try_for_each(check_label)
}

/// Checks one label: 1-63 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
fn check_label(label: &str) -> Result<(), Invalid> {
    let problem = if label.is_empty() {
        "has an empty label (a leading dot or two dots in a row)".to_owned()
    } else if label.len() > LABEL_MAX_LEN {
        format!(
            "has a label of {} characters; labels have at most {LABEL_MAX_LEN}",
            label.len()
        )
    } else if let Some(c) = label
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        format!(
            "has the label {} containing {}; labels contain only letters, digits and '-'",
            quoted(label),
            describe(c)
        )
    } else if label.starts_with('-') || label.ends_with('-') {
        format!(
            "has the label {} starting or ending with '-'",
            quoted(label)
        )
    } else {
        return Ok(());
    };
    Err(invalid(problem, EXPECTED_DOMAIN))
}

// ------------------------------------------------------------------ IP_ADDRESS

/// `IP_ADDRESS`: one IPv4 or IPv6 address in std's display form (IPv6
/// compressed, lowercase); an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
/// becomes the IPv4 address. Ranges and ports are refused.
fn ip_address(value: &str) -> Result<String, Invalid> {
    if value.contains('/') {
        return Err(invalid(
            "is a CIDR range (it contains '/'); publish single addresses only",
            EXPECTED_IP,
        ));
    }
    if value.parse::<SocketAddr>().is_ok() {
        return Err(invalid(
            "includes a port; publish the address alone",
            EXPECTED_IP,
        ));
    }
    let ip: IpAddr = value
        .parse()
        .map_err(|_| invalid("is not an IPv4 or IPv6 address", EXPECTED_IP))?;
    Ok(ip.to_canonical().to_string())
}

// ---------------------------------------------------------------------- UPI_ID

/// `UPI_ID`: lowercase `handle@psp`; the handle is 2-256 of `a-z`, `0-9`,
/// `.`, `_`, `-`; the PSP handle (`okaxis`, `ybl`, `paytm`…) 2-64 of `a-z`, `0-9`.
fn upi_id(value: &str) -> Result<String, Invalid> {
    let lower = value.to_ascii_lowercase();
    let (handle, psp) = split_at_sign(&lower, EXPECTED_UPI)?;
    let handle_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c);
    check_part("handle", handle, 2, 256, handle_char, EXPECTED_UPI)?;
    let psp_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    check_part("PSP handle", psp, 2, 64, psp_char, EXPECTED_UPI)?;
    Ok(lower)
}

/// Splits `value` at its one `@`.
fn split_at_sign<'a>(
    value: &'a str,
    expected: &'static str,
) -> Result<(&'a str, &'a str), Invalid> {
    match value.matches('@').count() {
        0 => Err(invalid("has no '@'", expected)),
        1 => value
            .split_once('@')
            .ok_or_else(|| invalid("has no '@'", expected)),
        n => Err(invalid(
            format!("has {n} '@' signs; exactly one is allowed"),
            expected,
        )),
    }
}

/// Checks that `part` (named `what`) has only `allowed` characters and a
/// length of `min..=max` characters.
fn check_part(
    what: &str,
    part: &str,
    min: usize,
    max: usize,
    allowed: impl Fn(char) -> bool,
    expected: &'static str,
) -> Result<(), Invalid> {
    if let Some(c) = part.chars().find(|&c| !allowed(c)) {
        return Err(invalid(
            format!("the {what} contains {}", describe(c)),
            expected,
        ));
    }
    let n = part.chars().count();
    if !(min..=max).contains(&n) {
        let wanted = if min == max {
            format!("exactly {min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(invalid(
            format!("the {what} has {n} characters; it must have {wanted}"),
            expected,
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- BANK_ACCOUNT

/// `BANK_ACCOUNT`: `IFSC:ACCOUNT`, the IFSC uppercase (`^[A-Z]{4}0[A-Z0-9]{6}$`)
/// and the account number 9-18 digits, leading zeros kept. Input has the two
/// in either order, separated by `:`, `/`, `-`, `|` or whitespace.
fn bank_account(value: &str) -> Result<String, Invalid> {
    let parts: Vec<&str> = value
        .split(|c: char| matches!(c, ':' | '/' | '-' | '|') || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .collect();
    let [first, second] = parts.as_slice() else {
        return Err(invalid(
            format!(
                "has {} part(s); it needs an IFSC code and an account number separated by \
                 ':', '/', '-', '|' or a space",
                parts.len()
            ),
            EXPECTED_BANK,
        ));
    };
    let (ifsc, account) = match (is_all_digits(first), is_all_digits(second)) {
        (true, true) => {
            return Err(invalid("has two numbers and no IFSC code", EXPECTED_BANK));
        }
        (true, false) => (second, first),
        _ => (first, second),
    };
    let ifsc = ifsc.to_ascii_uppercase();
    check_ifsc(&ifsc)?;
    check_account_number(account)?;
    Ok(format!("{ifsc}:{account}"))
}

fn is_all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// Checks an uppercased IFSC code: 4 letters, the digit 0, 6 letters or digits.
fn check_ifsc(ifsc: &str) -> Result<(), Invalid> {
    let problem = match ifsc.as_bytes() {
        [bank @ .., b'0', _, _, _, _, _, _] if bank.len() == 4 => {
            let branch_ok = ifsc
                .bytes()
                .skip(5)
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !bank.iter().all(u8::is_ascii_uppercase) {
                "does not start with 4 letters"
            } else if !branch_ok {
                "does not end with 6 letters or digits"
            } else {
                return Ok(());
            }
        }
        bytes if bytes.len() == 11 => "does not have the digit 0 as its fifth character",
        _ => "does not have 11 characters",
    };
    Err(invalid(
        format!("the IFSC code {} {problem}", quoted(ifsc)),
        EXPECTED_BANK,
    ))
}

/// Checks an account number: 9-18 digits.
fn check_account_number(account: &str) -> Result<(), Invalid> {
    if let Some(c) = account.chars().find(|c| !c.is_ascii_digit()) {
        return Err(invalid(
            format!("the account number contains {}", describe(c)),
            EXPECTED_BANK,
        ));
    }
    if !(9..=18).contains(&account.len()) {
        return Err(invalid(
            format!(
                "the account number has {} digits; it must have 9 to 18",
                account.len()
            ),
            EXPECTED_BANK,
        ));
    }
    Ok(())
}

// ----------------------------------------------------------------------- EMAIL

/// `EMAIL`: `local@domain`, the whole address lowercased (Unicode lowercase).
/// Mailbox names are case-sensitive in theory but not in practice, and one
/// form per mailbox is what matching needs. The local part is 1-64 bytes
/// without whitespace or the characters `"(),:;<>[\]` (which need quoting);
/// the domain is normalized as a `DOMAIN`. At most 254 bytes in all.
fn email(value: &str) -> Result<String, Invalid> {
    let lower = value.to_lowercase();
    let (local, domain_part) = split_at_sign(&lower, EXPECTED_EMAIL)?;
    check_email_local(local)?;
    let domain = domain_name(domain_part)
        .map_err(|e| invalid(format!("the domain part {}", e.problem), EXPECTED_EMAIL))?;
    let address = format!("{local}@{domain}");
    if address.len() > EMAIL_MAX_LEN {
        return Err(invalid(
            format!(
                "is {} bytes long; email addresses have at most {EMAIL_MAX_LEN}",
                address.len()
            ),
            EXPECTED_EMAIL,
        ));
    }
    Ok(address)
}

/// Checks an email local part: 1-64 bytes, no whitespace or specials.
fn check_email_local(local: &str) -> Result<(), Invalid> {
    if local.is_empty() {
        return Err(invalid("has nothing before the '@'", EXPECTED_EMAIL));
    }
    if local.len() > EMAIL_LOCAL_MAX_LEN {
        return Err(invalid(
            format!(
                "has a local part of {} bytes; at most {EMAIL_LOCAL_MAX_LEN} are allowed",
                local.len()
            ),
            EXPECTED_EMAIL,
        ));
    }
    if let Some(c) = local
        .chars()
        .find(|&c| c.is_whitespace() || "\"(),:;<>[\\]".contains(c))
    {
        return Err(invalid(
            format!("has a local part containing {}", describe(c)),
            EXPECTED_EMAIL,
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------ SMS_HEADER

/// `SMS_HEADER`: an Indian DLT sender header, uppercase: 6 letters or digits,
/// then optionally `-P`, `-S`, `-T` or `-G` (promotional, service,
/// transactional, government). A 2-letter operator/circle prefix such as
/// `VM-` is accepted and dropped: it varies with the route, the header
/// identifies the sender.
fn sms_header(value: &str) -> Result<String, Invalid> {
    let upper = value.to_ascii_uppercase();
    let parts: Vec<&str> = upper.split('-').collect();
    if parts.iter().any(|part| part.is_empty()) {
        return Err(invalid("has an empty part next to a '-'", EXPECTED_SMS));
    }
    let (prefix, header, suffix) = match parts.as_slice() {
        [header] => (None, *header, None),
        [header, suffix] if suffix.chars().count() == 1 => (None, *header, Some(*suffix)),
        [prefix, header] => (Some(*prefix), *header, None),
        [prefix, header, suffix] => (Some(*prefix), *header, Some(*suffix)),
        _ => {
            return Err(invalid(
                format!(
                    "has {} '-'-separated parts; at most 3 (prefix, header, suffix) are allowed",
                    parts.len()
                ),
                EXPECTED_SMS,
            ));
        }
    };
    if let Some(prefix) = prefix {
        check_part(
            "operator prefix",
            prefix,
            2,
            2,
            |c| c.is_ascii_uppercase(),
            EXPECTED_SMS,
        )?;
    }
    let header_char = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit();
    check_part("header", header, 6, 6, header_char, EXPECTED_SMS)?;
    match suffix {
        None => Ok(header.to_owned()),
        Some(suffix @ ("P" | "S" | "T" | "G")) => Ok(format!("{header}-{suffix}")),
        Some(suffix) => Err(invalid(
            format!(
                "has the suffix {}; the suffix is one of -P, -S, -T, -G",
                quoted(suffix)
            ),
            EXPECTED_SMS,
        )),
    }
}

// --------------------------------------------------------------------- helpers

/// Separators that people and word processors put in numbers: any whitespace,
/// `-` and the Unicode dashes U+2010-U+2015 (hyphen, en dash, em dash...).
fn is_dash_or_space(c: char) -> bool {
    c == '-' || c.is_whitespace() || ('\u{2010}'..='\u{2015}').contains(&c)
}

fn invalid(problem: impl Into<String>, expected: &'static str) -> Invalid {
    Invalid {
        problem: problem.into(),
        expected,
    }
}

/// A character for a problem text: quoted if visible, else its code point.
fn describe(c: char) -> String {
    if c.is_control() || c.is_whitespace() || is_forbidden_control(c) {
        format!("U+{:04X}", u32::from(c))
    } else {
        format!("'{c}' (U+{:04X})", u32::from(c))
    }
}

/// Part of a value for a problem text: quoted, cut to a few dozen characters.
fn quoted(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(QUOTE_MAX_CHARS).collect();
    if chars.next().is_some() {
        format!("'{head}…'")
    } else {
        format!("'{head}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use IndicatorKind::{
        BankAccount, Domain, Email, Imei, IpAddress, PhoneNumber, SmsHeader, Unspecified, UpiId,
        Url,
    };

    const ALL_KINDS: [IndicatorKind; 10] = [
        Unspecified,
        PhoneNumber,
        Imei,
        Url,
        Domain,
        IpAddress,
        UpiId,
        BankAccount,
        Email,
        SmsHeader,
    ];

    /// Asserts that every input normalizes to `canonical`, and `canonical` to itself.
    #[track_caller]
    fn accepts(kind: IndicatorKind, inputs: &[&str], canonical: &str) {
        for input in inputs {
            assert_eq!(
                normalize(kind, input).as_deref(),
                Ok(canonical),
                "{kind:?} {input:?}"
            );
        }
        assert_eq!(normalize(kind, canonical).as_deref(), Ok(canonical));
    }

    /// Asserts that `input` is refused with a problem text containing `needle`.
    #[track_caller]
    fn refuses(kind: IndicatorKind, input: &str, needle: &str) {
        match normalize(kind, input) {
            Ok(canonical) => panic!("{kind:?} {input:?} accepted as {canonical:?}"),
            Err(e) => assert!(
                e.problem.contains(needle),
                "{kind:?} {input:?}: problem {:?} lacks {needle:?}",
                e.problem
            ),
        }
    }

    // ------------------------------------------------------------ any kind

    #[test]
    fn unspecified_kind_is_refused_whatever_the_value() {
        for value in ["", "+919876543210", "example.com"] {
            let e = normalize(Unspecified, value).unwrap_err();
            assert_eq!(e.problem, "indicator kind is unspecified");
            assert_eq!(e.expected, EXPECTED_KIND);
            assert!(e.expected.contains("PHONE_NUMBER") && e.expected.contains("SMS_HEADER"));
        }
    }

    #[test]
    fn empty_and_blank_values_are_refused_for_every_kind() {
        for kind in ALL_KINDS.into_iter().skip(1) {
            for value in ["", "   ", "\t\n", "\u{00A0}\u{3000}"] {
                let e = normalize(kind, value).unwrap_err();
                assert_eq!(e.problem, "is empty", "{kind:?} {value:?}");
                assert!(!e.expected.is_empty());
            }
        }
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        accepts(PhoneNumber, &[" \t9876543210\r\n "], "+919876543210");
        accepts(
            Domain,
            ["\u{3000}example.com\u{00A0}"].as_slice(),
            "example.com",
        );
    }

    #[test]
    fn overlong_values_are_refused_stating_the_limit() {
        for kind in ALL_KINDS.into_iter().skip(1) {
            let value = "9".repeat(MAX_VALUE_LEN + 1);
            refuses(
                kind,
                &value,
                "2049 bytes long, over the limit of 2048 bytes",
            );
        }
    }

    #[test]
    fn control_characters_are_refused() {
        refuses(PhoneNumber, "98765\u{0}43210", "control character U+0000");
        refuses(Domain, "exam\tple.com", "control character U+0009");
        refuses(Url, "http://example.com/\u{7F}", "control character U+007F");
        refuses(Email, "a\u{202E}b@example.com", "control character U+202E");
        refuses(SmsHeader, "HDFC\u{85}BK", "control character U+0085");
    }

    #[test]
    fn invalid_displays_problem_and_expected_form() {
        let e = normalize(SmsHeader, "HDFC").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}; expected {}", e.problem, e.expected)
        );
    }

    // -------------------------------------------------------- PHONE_NUMBER

    #[test]
    fn phone_indian_formats_become_e164() {
        accepts(
            PhoneNumber,
            &[
                "9876543210",
                "09876543210",
                "+91 98765 43210",
                "91-98765-43210",
                "+91-9876543210",
                "(+91) 98765-43210",
                "0091 9876543210",
                "919876543210",
                "+91.98765.43210",
                "098765 43210",
            ],
            "+919876543210",
        );
        accepts(PhoneNumber, &["6000000000"], "+916000000000");
        accepts(
            PhoneNumber,
            &["+91\u{00A0}98765\u{2013}43210", "98765\u{2009}43210"],
            "+919876543210",
        );
    }

    #[test]
    fn phone_other_countries_need_international_form() {
        accepts(
            PhoneNumber,
            &["+880 1712-345678", "00880 1712 345678"],
            "+8801712345678",
        );
        accepts(PhoneNumber, &["+1 (202) 555-0123"], "+12025550123");
        accepts(PhoneNumber, &["+44 20 7946 0958"], "+442079460958");
        refuses(
            PhoneNumber,
            "8801712345678",
            "13 digits and no country code",
        );
        refuses(PhoneNumber, "2025550123", "the Indian number starts with 2");
    }

    #[test]
    fn phone_indian_numbers_must_be_mobiles_of_ten_digits() {
        let rule = "Indian mobile numbers have 10 digits after +91 starting with 6-9";
        refuses(PhoneNumber, "+91 11 2345 6789", "starts with 1");
        refuses(PhoneNumber, "+91 11 2345 6789", rule);
        refuses(PhoneNumber, "5876543210", "starts with 5");
        refuses(PhoneNumber, "05876543210", rule);
        refuses(PhoneNumber, "+91 98765 4321", "has 9 digits");
        refuses(PhoneNumber, "+91 98765 432100", "has 11 digits");
        refuses(PhoneNumber, "+91", "has 0 digits");
        refuses(PhoneNumber, "0091 98765", "has 5 digits");
    }

    #[test]
    fn phone_international_length_and_country_code_rules() {
        refuses(PhoneNumber, "+1234567", "has 7 digits");
        refuses(PhoneNumber, "+1234567890123456", "has 16 digits");
        refuses(PhoneNumber, "+0123456789", "country code starting with 0");
        refuses(PhoneNumber, "000123456789", "country code starting with 0");
        accepts(PhoneNumber, &["+12345678"], "+12345678");
        accepts(PhoneNumber, &["+123456789012345"], "+123456789012345");
    }

    #[test]
    fn phone_refuses_letters_symbols_and_misplaced_plus() {
        refuses(PhoneNumber, "98765 4321O", "contains the letter 'O'");
        refuses(
            PhoneNumber,
            "+91 98765 43210 ext 5",
            "phone numbers are digits only",
        );
        refuses(PhoneNumber, "98765/43210", "contains '/'");
        refuses(PhoneNumber, "98765_43210", "only digits, a leading '+'");
        refuses(PhoneNumber, "91+9876543210", "'+' that is not at the start");
        refuses(
            PhoneNumber,
            "++919876543210",
            "'+' that is not at the start",
        );
        refuses(PhoneNumber, "(+) - .", "contains no digits");
        refuses(PhoneNumber, "९८७६५४३२१०", "contains '९'");
        refuses(PhoneNumber, "９８７６５４３２１０", "contains '９'");
    }

    // ---------------------------------------------------------------- IMEI

    #[test]
    fn imei_with_valid_check_digit_is_accepted() {
        accepts(
            Imei,
            &[
                "490154203237518",
                "49-015420-323751-8",
                "49 015420 323751 8",
                "490154/203237518",
            ],
            "490154203237518",
        );
        accepts(Imei, &["356938035643809"], "356938035643809");
    }

    #[test]
    fn imei_wrong_check_digit_says_the_right_one() {
        refuses(
            Imei,
            "490154203237517",
            "check digit 7 but the Luhn check digit of its first 14 digits is 8",
        );
    }

    #[test]
    fn imeisv_maps_to_its_imei() {
        accepts(
            Imei,
            &["4901542032375100", "49-015420-323751-99"],
            "490154203237518",
        );
    }

    #[test]
    fn imei_refuses_wrong_lengths_letters_and_zeros() {
        refuses(Imei, &"0".repeat(30), "has 30 digits");
        refuses(
            Imei,
            "49015420323751",
            "has 14 digits; an IMEI has 15 digits and an IMEISV 16",
        );
        refuses(Imei, "49015420323751800", "has 17 digits");
        refuses(Imei, "4901542032375I8", "contains 'I'");
        refuses(Imei, "49.015420.323751.8", "contains '.'");
        refuses(Imei, "000000000000000", "all zeros");
        refuses(Imei, "0000000000000000", "all zeros");
    }

    #[test]
    fn luhn_check_digit_matches_known_values() {
        assert_eq!(luhn_check_digit("49015420323751"), '8');
        assert_eq!(luhn_check_digit("35693803564380"), '9');
        assert_eq!(luhn_check_digit("00000000000000"), '0');
        assert_eq!(luhn_check_digit("99999999999999"), '4');
    }

    // ----------------------------------------------------------------- URL

    #[test]
    fn url_is_normalized_by_the_url_crate() {
        accepts(
            Url,
            &[
                "HTTP://Example.COM/login?next=/home",
                "http://example.com:80/login?next=/home",
                "http://example.com/login?next=/home#top",
                "example.com/login?next=/home",
            ],
            "http://example.com/login?next=/home",
        );
        accepts(
            Url,
            &["https://example.com:443", "HTTPS://EXAMPLE.com/"],
            "https://example.com/",
        );
        accepts(
            Url,
            &["https://example.com:8443/A/B"],
            "https://example.com:8443/A/B",
        );
        accepts(Url, &["example.com:8080/x"], "http://example.com:8080/x");
    }

    #[test]
    fn url_idn_host_becomes_punycode_and_path_is_percent_encoded() {
        accepts(
            Url,
            &[
                "https://Bücher.Example/straße?q=ä b",
                "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%A4%20b",
            ],
            "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%A4%20b",
        );
    }

    #[test]
    fn url_without_scheme_is_http() {
        accepts(Url, &["www.example.com"], "http://www.example.com/");
        accepts(Url, &["203.0.113.7/x"], "http://203.0.113.7/x");
        accepts(Url, &["[2001:DB8::1]:8080"], "http://[2001:db8::1]:8080/");
        accepts(
            Url,
            &["paypal.com@evil.example/"],
            "http://paypal.com@evil.example/",
        );
    }

    #[test]
    fn url_refuses_other_schemes_listing_http_and_https() {
        for (value, scheme) in [
            ("ftp://example.com/f", "'ftp'"),
            ("mailto:someone@example.com", "'mailto'"),
            ("javascript:alert(1)", "'javascript'"),
            ("file:///etc/passwd", "'file'"),
            ("tel:+919876543210", "'tel'"),
        ] {
            refuses(Url, value, &format!("has the scheme {scheme}"));
            refuses(Url, value, "only http and https URLs are accepted");
        }
    }

    #[test]
    fn url_refuses_missing_or_bad_hosts() {
        refuses(Url, "http://", "empty host");
        refuses(Url, "http://exa mple.com/", "not a valid URL");
        refuses(Url, "http://[::1/", "not a valid URL");
        refuses(Url, "http://example.com:99999/", "not a valid URL");
    }

    #[test]
    fn url_whose_canonical_form_is_too_long_is_refused() {
        let value = format!("example.com/{}", "é".repeat(1000));
        assert!(value.len() <= MAX_VALUE_LEN);
        refuses(
            Url,
            &value,
            "bytes long once normalized, over the limit of 2048 bytes",
        );
    }

    // -------------------------------------------------------------- DOMAIN

    #[test]
    fn domain_is_lowercased_without_trailing_dot() {
        accepts(
            Domain,
            &["Example.COM", "example.com.", "EXAMPLE.COM."],
            "example.com",
        );
        accepts(Domain, &["login-sbi.co.in"], "login-sbi.co.in");
        accepts(Domain, &["a1.b2"], "a1.b2");
    }

    #[test]
    fn domain_idn_becomes_punycode() {
        accepts(
            Domain,
            &["Bücher.Example", "xn--bcher-kva.example"],
            "xn--bcher-kva.example",
        );
        accepts(Domain, &["भारत.भारत"], "xn--h2brj9c.xn--h2brj9c");
        accepts(
            Domain,
            &["example。com", "ｅｘａｍｐｌｅ．ｃｏｍ"],
            "example.com",
        );
    }

    #[test]
    fn domain_refuses_urls_emails_and_ips() {
        refuses(
            Domain,
            "http://example.com",
            "looks like a URL; publish it as URL",
        );
        refuses(Domain, "example.com/login", "contains '/'");
        refuses(Domain, "example.com:8080", "contains ':'");
        refuses(Domain, "exa mple.com", "contains U+0020");
        refuses(
            Domain,
            "user@example.com",
            "publish email addresses as EMAIL",
        );
        refuses(
            Domain,
            "203.0.113.7",
            "is an IP address; publish it as IP_ADDRESS",
        );
        refuses(Domain, "2001:db8::1", "is an IP address");
        refuses(Domain, "[2001:db8::1]", "is an IP address");
        refuses(Domain, "127.1", "is an IP address");
    }

    #[test]
    fn domain_label_rules() {
        refuses(Domain, "localhost", "single label 'localhost'");
        refuses(Domain, "example..com", "empty label");
        refuses(Domain, ".example.com", "empty label");
        refuses(Domain, "example.com..", "empty label");
        refuses(Domain, "-bad.example", "starting or ending with '-'");
        refuses(Domain, "bad-.example", "starting or ending with '-'");
        refuses(Domain, "under_score.example", "containing '_'");
        refuses(
            Domain,
            &format!("{}.com", "a".repeat(64)),
            "label of 64 characters",
        );
        accepts(
            Domain,
            &[&format!("{}.com", "a".repeat(63))],
            &format!("{}.com", "a".repeat(63)),
        );
        let long = vec!["a".repeat(50); 5].join(".");
        refuses(Domain, &long, "254 characters long");
        refuses(Domain, "xn--zz.example", "not a valid domain name");
        refuses(Domain, "example.123", "not a valid domain name");
    }

    // ---------------------------------------------------------- IP_ADDRESS

    #[test]
    fn ip_addresses_in_canonical_display_form() {
        accepts(IpAddress, &["203.0.113.7"], "203.0.113.7");
        accepts(
            IpAddress,
            &["2001:DB8:0:0:0:0:0:1", "2001:db8::0:1", "2001:0db8::1"],
            "2001:db8::1",
        );
        accepts(
            IpAddress,
            &["::ffff:203.0.113.7", "::FFFF:cb00:7107"],
            "203.0.113.7",
        );
        accepts(IpAddress, &["::1"], "::1");
    }

    #[test]
    fn ip_refuses_ranges_ports_and_garbage() {
        refuses(IpAddress, "10.0.0.0/8", "CIDR range");
        refuses(IpAddress, "2001:db8::/32", "CIDR range");
        refuses(IpAddress, "203.0.113.7:443", "includes a port");
        refuses(IpAddress, "[2001:db8::1]:443", "includes a port");
        refuses(IpAddress, "256.1.1.1", "is not an IPv4 or IPv6 address");
        refuses(IpAddress, "010.1.1.1", "is not an IPv4 or IPv6 address");
        refuses(IpAddress, "example.com", "is not an IPv4 or IPv6 address");
        refuses(IpAddress, "fe80::1%eth0", "is not an IPv4 or IPv6 address");
    }

    // -------------------------------------------------------------- UPI_ID

    #[test]
    fn upi_ids_are_lowercased() {
        accepts(UpiId, &["Ramesh.Kumar-99@OkAxis"], "ramesh.kumar-99@okaxis");
        accepts(UpiId, &["9876543210@ybl"], "9876543210@ybl");
        accepts(UpiId, &["shop_12@paytm"], "shop_12@paytm");
    }

    #[test]
    fn upi_ids_must_have_one_at_and_valid_parts() {
        refuses(UpiId, "ramesh.okaxis", "has no '@'");
        refuses(UpiId, "a@b@okaxis", "has 2 '@' signs");
        refuses(
            UpiId,
            "r@okaxis",
            "the handle has 1 characters; it must have 2 to 256",
        );
        refuses(UpiId, "ramesh@o", "the PSP handle has 1 characters");
        refuses(UpiId, "@okaxis", "the handle has 0 characters");
        refuses(UpiId, "ram esh@okaxis", "the handle contains U+0020");
        refuses(UpiId, "ramesh@ok.axis", "the PSP handle contains '.'");
        refuses(UpiId, "rämesh@okaxis", "the handle contains 'ä'");
        refuses(UpiId, &format!("{}@ybl", "a".repeat(257)), "257 characters");
        refuses(UpiId, &format!("ab@{}", "b".repeat(65)), "65 characters");
    }

    // -------------------------------------------------------- BANK_ACCOUNT

    #[test]
    fn bank_accounts_in_either_order_with_any_separator() {
        accepts(
            BankAccount,
            &[
                "SBIN0001234:12345678901",
                "sbin0001234/12345678901",
                "12345678901 - SBIN0001234",
                "12345678901|sbin0001234",
                "SBIN0001234 12345678901",
                "  12345678901   Sbin0001234 ",
            ],
            "SBIN0001234:12345678901",
        );
        accepts(
            BankAccount,
            &["hdfc0abc123 : 000123456"],
            "HDFC0ABC123:000123456",
        );
    }

    #[test]
    fn bank_account_refuses_bad_ifsc() {
        refuses(
            BankAccount,
            "SBINO001234:12345678901",
            "digit 0 as its fifth character",
        );
        refuses(
            BankAccount,
            "SB1N0001234:12345678901",
            "does not start with 4 letters",
        );
        refuses(
            BankAccount,
            "SBIN000123_:12345678901",
            "does not end with 6 letters or digits",
        );
        refuses(
            BankAccount,
            "SBIN000123:12345678901",
            "does not have 11 characters",
        );
        refuses(
            BankAccount,
            "12345678901:98765432101",
            "two numbers and no IFSC code",
        );
    }

    #[test]
    fn bank_account_refuses_bad_account_numbers_and_shapes() {
        refuses(
            BankAccount,
            "SBIN0001234:12345678",
            "has 8 digits; it must have 9 to 18",
        );
        refuses(
            BankAccount,
            "SBIN0001234:1234567890123456789",
            "has 19 digits",
        );
        refuses(
            BankAccount,
            "SBIN0001234:HDFC0001234",
            "account number contains 'H'",
        );
        refuses(BankAccount, "SBIN000123412345678901", "has 1 part(s)");
        refuses(BankAccount, "SBIN0001234:1234:5678901", "has 3 part(s)");
    }

    // --------------------------------------------------------------- EMAIL

    #[test]
    fn emails_are_lowercased_with_normalized_domain() {
        accepts(
            Email,
            &[
                "Ramesh.Kumar+kyc@Example.COM",
                "ramesh.kumar+kyc@example.com.",
            ],
            "ramesh.kumar+kyc@example.com",
        );
        accepts(
            Email,
            &["Info@Bücher.Example"],
            "info@xn--bcher-kva.example",
        );
        accepts(Email, &["Ünï@example.in"], "ünï@example.in");
    }

    #[test]
    fn emails_refuse_bad_shapes() {
        refuses(Email, "ramesh.example.com", "has no '@'");
        refuses(Email, "a@b@example.com", "has 2 '@' signs");
        refuses(Email, "@example.com", "nothing before the '@'");
        refuses(Email, "ram esh@example.com", "local part containing U+0020");
        refuses(Email, "ram<esh>@example.com", "local part containing '<'");
        refuses(
            Email,
            &format!("{}@example.com", "a".repeat(65)),
            "local part of 65 bytes",
        );
        refuses(
            Email,
            "ramesh@localhost",
            "the domain part has the single label",
        );
        refuses(
            Email,
            "ramesh@",
            "the domain part is not a valid domain name",
        );
        refuses(
            Email,
            "ramesh@203.0.113.7",
            "the domain part is an IP address",
        );
        refuses(
            Email,
            "ramesh@exa_mple.com",
            "the domain part has the label",
        );
        let long_domain = vec!["d".repeat(60); 4].join(".");
        refuses(
            Email,
            &format!("{}@{long_domain}", "a".repeat(11)),
            "255 bytes long",
        );
    }

    // ---------------------------------------------------------- SMS_HEADER

    #[test]
    fn sms_headers_drop_the_prefix_and_keep_the_suffix() {
        accepts(
            SmsHeader,
            &["vm-hdfcbk-s", "HDFCBK-S", "JD-HDFCBK-s"],
            "HDFCBK-S",
        );
        accepts(SmsHeader, &["AX-SBIINB", "sbiinb", "bz-SbiInb"], "SBIINB");
        accepts(SmsHeader, &["hdfcbk"], "HDFCBK");
        accepts(SmsHeader, &["AD-123456-P"], "123456-P");
        accepts(SmsHeader, &["GOVTIN-g"], "GOVTIN-G");
        accepts(SmsHeader, &["vk-abcdef-t"], "ABCDEF-T");
    }

    #[test]
    fn sms_headers_refuse_other_shapes() {
        refuses(
            SmsHeader,
            "HDFC",
            "the header has 4 characters; it must have exactly 6",
        );
        refuses(SmsHeader, "VMHDFCBK", "the header has 8 characters");
        refuses(SmsHeader, "VM-HDFCBANK", "the header has 8 characters");
        refuses(SmsHeader, "V1-HDFCBK", "the operator prefix contains '1'");
        refuses(
            SmsHeader,
            "VMX-HDFCBK",
            "the operator prefix has 3 characters",
        );
        refuses(SmsHeader, "HDFCBK-X", "the suffix is one of -P, -S, -T, -G");
        refuses(SmsHeader, "VM-HDFCBK-SS", "has the suffix 'SS'");
        refuses(SmsHeader, "HDFC_K", "the header contains '_'");
        refuses(SmsHeader, "HDFCBK-", "empty part");
        refuses(SmsHeader, "VM--HDFCBK", "empty part");
        refuses(SmsHeader, "A-B-C-D", "has 4 '-'-separated parts");
        refuses(SmsHeader, "HDFC BK", "the header contains U+0020");
        refuses(SmsHeader, "HDFCBÄ", "the header contains 'Ä'");
    }

    // ------------------------------------------------------------ properties

    /// Checks the idempotence property for one accepted or refused value.
    fn assert_idempotent(kind: IndicatorKind, value: &str) -> Result<(), TestCaseError> {
        if let Ok(canonical) = normalize(kind, value) {
            prop_assert!(canonical.len() <= MAX_VALUE_LEN);
            prop_assert_eq!(canonical.trim(), canonical.as_str());
            prop_assert_eq!(normalize(kind, &canonical), Ok(canonical.clone()));
        }
        Ok(())
    }

    fn any_kind() -> impl Strategy<Value = IndicatorKind> {
        proptest::sample::select(ALL_KINDS.to_vec())
    }

    /// Strings over the characters the rules care about, to reach deep branches.
    fn syntax_soup() -> impl Strategy<Value = String> {
        let alphabet: Vec<char> = "0123456789+-()./:@|_% abcxyzAXSPTGN[]?#=&é例\u{00A0}\u{0}"
            .chars()
            .collect();
        proptest::collection::vec(proptest::sample::select(alphabet), 0..40)
            .prop_map(String::from_iter)
    }

    /// Strings of URL and domain syntax fragments, for the parser's odd corners.
    fn url_soup() -> impl Strategy<Value = String> {
        let pieces = vec![
            "http://", "https:", "//", "/", "\\", "..", ".", "%2e", "%2E%2e", "%", "%41", "@", ":",
            "::", "[", "]", "?", "#", "0x", "0", "1", "255", "a", "B", "é", "xn--", "-", "ß", "。",
            "ｅ", " ", "\u{00AD}", "\u{200D}", "\u{FFFD}", "ffff", "com", "in",
        ];
        proptest::collection::vec(proptest::sample::select(pieces), 0..16)
            .prop_map(|pieces| pieces.concat())
    }

    /// Any chars at all, control and unassigned ones included.
    fn any_chars() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..64).prop_map(String::from_iter)
    }

    /// Formats a 10-digit Indian mobile number in one of the accepted ways.
    fn indian_phone() -> impl Strategy<Value = (String, String)> {
        ("[6-9][0-9]{9}", 0usize..9).prop_map(|(n, style)| {
            let (a, b) = n.split_at(5);
            let written = match style {
                0 => n.clone(),
                1 => format!("0{n}"),
                2 => format!("+91 {a} {b}"),
                3 => format!("91-{a}-{b}"),
                4 => format!("+91-{n}"),
                5 => format!("(+91) {a}-{b}"),
                6 => format!("0091 {n}"),
                7 => format!("91{n}"),
                _ => format!(" +91.{a}.{b} "),
            };
            (written, format!("+91{n}"))
        })
    }

    /// An international non-Indian number, 8-15 digits in all.
    fn foreign_phone() -> impl Strategy<Value = (String, String)> {
        let code = proptest::sample::select(vec!["1", "44", "880", "971", "61", "977"]);
        (code, "[0-9]{13}", 0usize..8, 0usize..3).prop_map(|(cc, digits, extra, style)| {
            let len = 8usize.saturating_sub(cc.len()) + extra.min(15 - 8);
            let subscriber = digits.get(..len).unwrap_or(&digits).to_owned();
            let written = match style {
                0 => format!("+{cc} {subscriber}"),
                1 => format!("00{cc}{subscriber}"),
                _ => format!("(+{cc}) {subscriber}"),
            };
            (written, format!("+{cc}{subscriber}"))
        })
    }

    /// A valid IMEI (possibly as IMEISV) written with separators.
    fn valid_imei() -> impl Strategy<Value = (String, String)> {
        ("[1-9][0-9]{13}", "[0-9]{2}", 0usize..4).prop_map(|(body, sv, style)| {
            let imei = format!("{body}{}", luhn_check_digit(&body));
            let written = match style {
                0 => imei.clone(),
                1 => format!("{}-{}-{}", &imei[..2], &imei[2..8], &imei[8..]),
                2 => format!("{} {}", &imei[..8], &imei[8..]),
                _ => format!("{body}{sv}"),
            };
            (written, imei)
        })
    }

    fn ascii_domain() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", 1..4),
            "[a-zA-Z]{2,6}",
        )
            .prop_map(|(labels, tld)| format!("{}.{tld}", labels.join(".")))
    }

    fn any_domain() -> impl Strategy<Value = String> {
        let idn = proptest::sample::select(vec![
            "bücher.example",
            "пример.рф",
            "例え.テスト",
            "भारत.भारत",
            "ÉCOLE.fr",
            "straße.de",
        ]);
        prop_oneof![
            3 => ascii_domain(),
            1 => idn.prop_map(str::to_owned),
            1 => ascii_domain().prop_map(|d| format!("{d}.")),
        ]
    }

    fn any_url() -> impl Strategy<Value = String> {
        let scheme =
            proptest::sample::select(vec!["", "http://", "https://", "HTTP://", "HtTpS://"]);
        let port = proptest::sample::select(vec!["", ":80", ":443", ":8080"]);
        (
            scheme,
            any_domain(),
            port,
            "(/[a-zA-Z0-9._~%é -]{0,8}){0,3}",
            proptest::option::of("[a-z0-9=&%/?é ]{0,12}"),
            proptest::option::of("[a-z0-9 ]{0,6}"),
        )
            .prop_map(|(scheme, host, port, path, query, fragment)| {
                let host = host.trim_end_matches('.');
                let query = query.map(|q| format!("?{q}")).unwrap_or_default();
                let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
                format!("{scheme}{host}{port}{path}{query}{fragment}")
            })
    }

    fn any_ip() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<Ipv4Addr>().prop_map(|ip| ip.to_string()),
            any::<Ipv6Addr>().prop_map(|ip| ip.to_string()),
            any::<Ipv6Addr>().prop_map(|ip| ip.to_string().to_uppercase()),
            any::<Ipv4Addr>().prop_map(|ip| format!("::FFFF:{ip}")),
            any::<[u16; 8]>().prop_map(|s| s.map(|x| format!("{x:x}")).join(":")),
        ]
    }

    fn any_upi() -> impl Strategy<Value = String> {
        ("[a-zA-Z0-9._-]{2,30}", "[a-zA-Z0-9]{2,10}").prop_map(|(h, p)| format!("{h}@{p}"))
    }

    fn any_bank_account() -> impl Strategy<Value = (String, String)> {
        let sep = proptest::sample::select(vec![":", "/", "-", "|", " ", " : ", " / ", "  "]);
        (
            "[A-Za-z]{4}0[A-Za-z0-9]{6}",
            "[0-9]{9,18}",
            sep,
            any::<bool>(),
        )
            .prop_map(|(ifsc, account, sep, account_first)| {
                let written = if account_first {
                    format!("{account}{sep}{ifsc}")
                } else {
                    format!("{ifsc}{sep}{account}")
                };
                (written, format!("{}:{account}", ifsc.to_ascii_uppercase()))
            })
    }

    fn any_email() -> impl Strategy<Value = String> {
        ("[a-zA-Z0-9._%+ÄÖÜéΣ-]{1,20}", any_domain()).prop_map(|(l, d)| format!("{l}@{d}"))
    }

    fn any_sms_header() -> impl Strategy<Value = (String, String)> {
        let suffix = proptest::sample::select(vec!["", "-P", "-s", "-T", "-g"]);
        (
            proptest::option::of("[A-Za-z]{2}"),
            "[A-Za-z0-9]{6}",
            suffix,
        )
            .prop_map(|(prefix, header, suffix)| {
                let prefix = prefix.map(|p| format!("{p}-")).unwrap_or_default();
                let canonical = format!("{header}{suffix}").to_ascii_uppercase();
                (format!("{prefix}{header}{suffix}"), canonical)
            })
    }

    proptest! {
        #[test]
        fn never_panics_and_is_idempotent_on_any_chars(kind in any_kind(), value in any_chars()) {
            assert_idempotent(kind, &value)?;
        }

        #[test]
        fn never_panics_and_is_idempotent_on_arbitrary_strings(kind in any_kind(), value in any::<String>()) {
            assert_idempotent(kind, &value)?;
        }

        #[test]
        fn never_panics_and_is_idempotent_on_syntax_soup(kind in any_kind(), value in syntax_soup()) {
            assert_idempotent(kind, &value)?;
        }

        #[test]
        fn never_panics_and_is_idempotent_on_url_soup(kind in any_kind(), value in url_soup()) {
            assert_idempotent(kind, &value)?;
            assert_idempotent(kind, &format!("http://{value}"))?;
            assert_idempotent(kind, &format!("x@{value}"))?;
        }

        #[test]
        fn never_panics_on_values_around_the_length_limit(
            kind in any_kind(),
            unit in "[a-z0-9.é@/:-]{1,3}",
            len in (MAX_VALUE_LEN - 8)..(MAX_VALUE_LEN + 8),
        ) {
            let value: String = unit.chars().cycle().take(len).collect();
            assert_idempotent(kind, &value)?;
            assert_idempotent(kind, &format!("http://a.b/{value}"))?;
        }

        #[test]
        fn indian_phone_formats_all_normalize_alike((written, canonical) in indian_phone()) {
            prop_assert_eq!(normalize(PhoneNumber, &written), Ok(canonical));
            assert_idempotent(PhoneNumber, &written)?;
        }

        #[test]
        fn foreign_phones_in_international_form_are_accepted((written, canonical) in foreign_phone()) {
            prop_assert_eq!(normalize(PhoneNumber, &written), Ok(canonical));
            assert_idempotent(PhoneNumber, &written)?;
        }

        #[test]
        fn valid_imeis_are_accepted((written, canonical) in valid_imei()) {
            prop_assert_eq!(normalize(Imei, &written), Ok(canonical));
            assert_idempotent(Imei, &written)?;
        }

        #[test]
        fn urls_are_accepted_and_idempotent(value in any_url()) {
            let canonical = normalize(Url, &value);
            prop_assert!(canonical.is_ok(), "{:?} -> {:?}", value, canonical);
            prop_assert!(!canonical.unwrap_or_default().contains('#'));
            assert_idempotent(Url, &value)?;
        }

        #[test]
        fn domains_are_accepted_and_idempotent(value in any_domain()) {
            let canonical = normalize(Domain, &value);
            prop_assert!(canonical.is_ok(), "{:?} -> {:?}", value, canonical);
            let canonical = canonical.unwrap_or_default();
            prop_assert!(canonical.is_ascii() && !canonical.ends_with('.'));
            prop_assert_eq!(canonical.to_ascii_lowercase(), canonical.clone());
            assert_idempotent(Domain, &value)?;
        }

        #[test]
        fn ip_addresses_are_accepted_and_idempotent(value in any_ip()) {
            let canonical = normalize(IpAddress, &value);
            prop_assert!(canonical.is_ok(), "{:?} -> {:?}", value, canonical);
            assert_idempotent(IpAddress, &value)?;
        }

        #[test]
        fn upi_ids_are_accepted_and_idempotent(value in any_upi()) {
            prop_assert_eq!(normalize(UpiId, &value), Ok(value.to_ascii_lowercase()));
            assert_idempotent(UpiId, &value)?;
        }

        #[test]
        fn bank_accounts_are_accepted_and_idempotent((written, canonical) in any_bank_account()) {
            prop_assert_eq!(normalize(BankAccount, &written), Ok(canonical));
            assert_idempotent(BankAccount, &written)?;
        }

        #[test]
        fn emails_are_accepted_and_idempotent(value in any_email()) {
            let canonical = normalize(Email, &value);
            prop_assert!(canonical.is_ok(), "{:?} -> {:?}", value, canonical);
            assert_idempotent(Email, &value)?;
        }

        #[test]
        fn sms_headers_are_accepted_and_idempotent((written, canonical) in any_sms_header()) {
            prop_assert_eq!(normalize(SmsHeader, &written), Ok(canonical));
            assert_idempotent(SmsHeader, &written)?;
        }
    }
}
