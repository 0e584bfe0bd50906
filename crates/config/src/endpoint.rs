//! Provider base URLs: the part of URL syntax an upstream address needs (scheme, host,
//! port, path prefix), parsed strictly so a typo fails at load time, not on the first
//! request.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A parsed provider endpoint such as `https://api.groq.com/openai`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `https`.
    pub tls: bool,
    /// Lowercase host name or IP address; IPv6 without brackets.
    pub host: String,
    /// The given port, else 443 for https and 80 for http.
    pub port: u16,
    /// Prepended to request paths; no trailing `/`, `""` for none.
    pub path_prefix: String,
}

impl Endpoint {
    /// The `Host` header value: the port only when it is not the scheme's default, IPv6
    /// in brackets.
    pub fn authority(&self) -> String {
        let host = self.bracketed_host();
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// `host:port` to connect to, IPv6 in brackets.
    pub fn address(&self) -> String {
        format!("{}:{}", self.bracketed_host(), self.port)
    }

    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    fn default_port(&self) -> u16 {
        if self.tls {
            443
        } else {
            80
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path_prefix)
    }
}

/// Parses `http(s)://host[:port][/path/prefix]`. Rejects credentials, queries and
/// fragments. The error says what is wrong without repeating the URL, which may hold a
/// secret.
pub fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("expected an absolute URL such as https://api.openai.com")?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => return Err("the scheme must be http or https".to_owned()),
    };
    if rest.contains('?') {
        return Err("a query string is not allowed".to_owned());
    }
    if rest.contains('#') {
        return Err("a fragment is not allowed".to_owned());
    }
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    if authority.contains('@') {
        return Err("credentials in the URL are not supported; use api_keys or headers".to_owned());
    }
    let (host, port) = split_host_port(authority)?;
    let port = match port {
        None if tls => 443,
        None => 80,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err("the port must be a number from 1 to 65535".to_owned()),
        },
    };
    check_path(path)?;
    Ok(Endpoint {
        tls,
        host,
        port,
        path_prefix: path.trim_end_matches('/').to_owned(),
    })
}

fn split_host_port(authority: &str) -> Result<(String, Option<&str>), String> {
    if authority.is_empty() {
        return Err("the URL has no host".to_owned());
    }
    if let Some(inner) = authority.strip_prefix('[') {
        let (host, tail) = inner.split_once(']').ok_or("unclosed '[' in the host")?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err("the bracketed host is not an IPv6 address".to_owned());
        }
        let port = match tail {
            "" => None,
            _ => Some(tail.strip_prefix(':').ok_or("unexpected text after ']'")?),
        };
        return Ok((host.to_ascii_lowercase(), port));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if port.is_some_and(|p| p.contains(':')) {
        return Err("an IPv6 host must be in brackets, e.g. http://[::1]:8080".to_owned());
    }
    check_host_name(host)?;
    Ok((host.to_ascii_lowercase(), port))
}

fn check_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the URL has no host".to_owned());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !host.split('.').all(label_ok) {
        return Err("the host must be a DNS name or an IP address".to_owned());
    }
    let numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if numeric && host.parse::<Ipv4Addr>().is_err() {
        return Err("the host is not a valid IPv4 address".to_owned());
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), String> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let escape_ok = bytes
                    .get(i + 1..i + 3)
                    .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
                if !escape_ok {
                    return Err("the path has a '%' that is not a %XX escape".to_owned());
                }
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) => i += 1,
            _ => {
                return Err(
                    "the path may only hold URL path characters (percent-encode others)".to_owned(),
                )
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> Endpoint {
        parse_endpoint(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn parses_scheme_host_port_and_prefix() {
        assert_eq!(
            ok("https://api.openai.com"),
            Endpoint {
                tls: true,
                host: "api.openai.com".into(),
                port: 443,
                path_prefix: String::new()
            }
        );
        assert_eq!(
            ok("HTTP://LocalHost:11434/"),
            Endpoint {
                tls: false,
                host: "localhost".into(),
                port: 11434,
                path_prefix: String::new()
            }
        );
        let groq = ok("https://api.groq.com/openai/");
        assert_eq!(groq.path_prefix, "/openai");
        assert_eq!(groq.port, 443);
        assert_eq!(ok("http://vllm_1:8000/a/b").path_prefix, "/a/b");
    }

    #[test]
    fn accepts_bracketed_ipv6() {
        let e = ok("http://[::1]:8080/v");
        assert_eq!(e.host, "::1");
        assert_eq!(e.port, 8080);
        assert_eq!(e.address(), "[::1]:8080");
        assert_eq!(e.authority(), "[::1]:8080");
        assert_eq!(ok("https://[2001:DB8::1]").host, "2001:db8::1");
    }

    #[test]
    fn authority_omits_default_ports() {
        assert_eq!(ok("https://a.example").authority(), "a.example");
        assert_eq!(ok("https://a.example").address(), "a.example:443");
        assert_eq!(ok("http://a.example:443").authority(), "a.example:443");
        assert_eq!(
            ok("http://127.0.0.1:11434/x/").to_string(),
            "http://127.0.0.1:11434/x"
        );
    }

    #[test]
    fn rejects_malformed_urls() {
        for (url, why) in [
            ("api.openai.com", "absolute URL"),
            ("ftp://a.example", "scheme"),
            ("https://", "no host"),
            ("https://:443", "no host"),
            ("https://a.example?x=1", "query"),
            ("https://a.example/#f", "fragment"),
            ("https://user:pw@a.example", "credentials"),
            ("https://a.example:0", "port"),
            ("https://a.example:99999", "port"),
            ("https://a.example:+80", "port"),
            ("https://a.example:", "port"),
            ("http://::1:8080", "brackets"),
            ("http://[::1", "unclosed"),
            ("http://[nope]:1", "IPv6"),
            ("http://[::1]x", "after ']'"),
            ("http://a..b", "DNS name"),
            ("http://a b", "DNS name"),
            ("http://999.1.1.1", "IPv4"),
            ("http://a.example/a b", "path"),
            ("http://a.example/%zz", "%XX"),
        ] {
            let err = parse_endpoint(url).expect_err(url);
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn errors_do_not_repeat_the_url() {
        let err = parse_endpoint("https://user:hunter2@a.example").unwrap_err();
        assert!(!err.contains("hunter2"));
    }
}
