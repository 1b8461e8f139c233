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
/// Accepted input: digits with the separators space, `-`, `.`, `(` and `)`,
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
            ' ' | '-' | '.' | '(' | ')' => {}
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
/// Separators space, `-` and `/` are dropped.
fn imei(value: &str) -> Result<String, Invalid> {
    let digits = imei_digits(value)?;
    let Some((body, tail)) = digits.split_at_checked(14) else {
        return Err(imei_length(digits.len()));
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
        2 => Ok(format!("{body}{check}")),
        _ => Err(imei_length(digits.len())),
    }
}

/// The digits of an IMEI, separators dropped.
fn imei_digits(value: &str) -> Result<String, Invalid> {
    let mut digits = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '/' => {}
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
