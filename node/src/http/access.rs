//! Who may use the HTTP side: the token, where it comes from, and the rule of what
//! needs it.
//!
//! | what | on a loopback address | on any other address |
//! | --- | --- | --- |
//! | `/health/*`, `/metrics`, the dashboard page (it holds no data) | open | open |
//! | reads (`/stats`, `/cluster/members`, `GET /counters/...`; the dashboard's own fetches) | open | token |
//! | changes (`POST /counters/...`) | token | token |
//!
//! The token is given like the cookie (`--http-token`, `NODE_HTTP_TOKEN`, or
//! `--http-token-file`), one way only, and never logged. A node refuses to serve HTTP
//! beyond loopback without one. Without a token on loopback, changes are refused:
//! nothing changes a counter without the token.
//!
//! A read without the token is answered only if the request names this node by a
//! loopback name (its `Host` header is `localhost`, a name under `.localhost`, or a
//! loopback address, with any port): a web page in a browser on the same machine whose
//! own name an attacker has made resolve to 127.0.0.1 (DNS rebinding) sends its own
//! name, and is refused.

use std::path::PathBuf;

use axum::http::{header, HeaderMap};
use clap::Args;
use subtle::ConstantTimeEq;

use crate::net::cookie::read_secret_file;

/// Where the HTTP token may come from.
#[derive(Clone, Default, Args)]
pub(crate) struct HttpTokenArgs {
    /// The HTTP side's bearer token (`Authorization: Bearer TOKEN`): changes always need
    /// it, reads need it when --http is beyond loopback (where it is required).
    /// Prefer NODE_HTTP_TOKEN or --http-token-file: a command line shows in `ps`.
    #[arg(long, env = "NODE_HTTP_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub http_token: Option<String>,
    /// A file whose first line is the HTTP token.
    #[arg(long, value_name = "PATH", env = "NODE_HTTP_TOKEN_FILE")]
    pub http_token_file: Option<PathBuf>,
}

impl std::fmt::Debug for HttpTokenArgs {
    // By hand, so that printing the command line never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTokenArgs")
            .field("http_token", &self.http_token.as_ref().map(|_| "<hidden>"))
            .field("http_token_file", &self.http_token_file)
            .finish()
    }
}

impl HttpTokenArgs {
    /// The token given, if any. Reads `--http-token-file` now.
    pub(crate) fn given(&self) -> Result<Option<Token>, String> {
        match (&self.http_token, &self.http_token_file) {
            (Some(_), Some(_)) => Err("the HTTP token is given twice: use one of \
                 --http-token, NODE_HTTP_TOKEN, --http-token-file (NODE_HTTP_TOKEN_FILE)"
                .into()),
            (Some(token), None) => Ok(Some(Token(token.clone()))),
            (None, Some(path)) => read_secret_file(path, "HTTP token").map(|t| Some(Token(t))),
            (None, None) => Ok(None),
        }
    }
}

fn parse_token(s: &str) -> Result<String, String> {
    // Trimmed as a token file's line is, and as a presented token is.
    let token = s.trim();
    if token.is_empty() {
        return Err("the HTTP token must not be empty".into());
    }
    Ok(token.to_string())
}

/// A resolved HTTP token. Its `Debug` hides it; it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

impl Token {
    /// A token, for tests.
    #[cfg(test)]
    pub(crate) fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

/// What a request needs (health probes need nothing and are not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Reads: the token, unless the HTTP side is on loopback.
    Read,
    /// Changes: the token, always.
    Change,
}

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No `Authorization: Bearer` header.
    NoToken,
    /// A token that is not this node's.
    WrongToken,
    /// A change to a node that has no token: nothing may change counters over HTTP.
    ChangesOff,
    /// A read without the token, addressed to this node by another name than a
    /// loopback one (see the module documentation).
    ForeignHost,
}

impl Denied {
    /// The reason, for the answer's body.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Denied::NoToken => "this needs the node's HTTP token: Authorization: Bearer TOKEN",
            Denied::WrongToken => "the HTTP token does not match the node's",
            Denied::ChangesOff => {
                "this node takes no changes over HTTP: start it with an HTTP token \
                 (--http-token, NODE_HTTP_TOKEN or --http-token-file)"
            }
            Denied::ForeignHost => {
                "without the token this node answers reads only when addressed by a loopback \
                 name (Host: localhost or 127.0.0.1): give the token (Authorization: Bearer \
                 TOKEN), or address it so"
            }
        }
    }
}

/// The access rule of one node's HTTP side.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    token: Option<Token>,
    /// Reads are open (the HTTP side listens on loopback only).
    open_reads: bool,
}

impl Access {
    /// The rule for a node with `token`, listening on loopback or not.
    pub(crate) fn new(token: Option<Token>, loopback: bool) -> Self {
        Self {
            token,
            open_reads: loopback,
        }
    }

    /// Whether a request with `headers` may do what needs `need`.
    pub(crate) fn check(&self, need: Need, headers: &HeaderMap) -> Result<(), Denied> {
        if need == Need::Read && self.open_reads {
            // A presented token is checked (then the name does not matter); without
            // one, the request must name this node by a loopback name.
            match (&self.token, bearer(headers)) {
                (Some(token), Some(presented)) => return matches(presented, token),
                _ if names_loopback(headers) => return Ok(()),
                _ => return Err(Denied::ForeignHost),
            }
        }
        let Some(token) = &self.token else {
            // Beyond loopback a node always has a token, so only a change gets here.
            return Err(Denied::ChangesOff);
        };
        matches(bearer(headers).ok_or(Denied::NoToken)?, token)
    }
}

/// Whether `presented` is `token` (compared in constant time).
fn matches(presented: &str, token: &Token) -> Result<(), Denied> {
    if bool::from(presented.as_bytes().ct_eq(token.0.as_bytes())) {
        Ok(())
    } else {
        Err(Denied::WrongToken)
    }
}

/// Whether the request's `Host` header names this machine's loopback: `localhost`, a
/// name under `.localhost`, or a loopback address, each with or without a port.
fn names_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // `[::1]` or `[::1]:PORT`.
        Some(rest) => rest.split_once(']').map_or(rest, |(ip, _)| ip),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(auth: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(auth) = auth {
            headers.insert(header::AUTHORIZATION, auth.parse().unwrap());
        }
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        headers
    }

    /// A read without the token is answered only when the request names this node by
    /// a loopback name: a page whose name was made to resolve to 127.0.0.1 is refused.
    #[test]
    fn token_less_reads_only_for_loopback_names() {
        let access = Access::new(Some(Token::new("s3cret")), true);
        let host = |host: Option<&str>, auth: Option<&str>| {
            let mut headers = with(auth);
            headers.remove(header::HOST);
            if let Some(host) = host {
                headers.insert(header::HOST, host.parse().unwrap());
            }
            access.check(Need::Read, &headers)
        };
        for good in [
            "127.0.0.1:4800",
            "127.0.0.1",
            "127.9.9.9:1",
            "localhost:4800",
            "LOCALHOST",
            "app.localhost:80",
            "[::1]:4800",
            "[::1]",
        ] {
            assert_eq!(host(Some(good), None), Ok(()), "{good}");
        }
        for bad in [
            "evil.example:4800",
            "evil.example",
            "10.0.0.5:4800",
            "[::2]:1",
            "local",
        ] {
            assert_eq!(host(Some(bad), None), Err(Denied::ForeignHost), "{bad}");
        }
        assert_eq!(host(None, None), Err(Denied::ForeignHost));
        // With the token, any name.
        assert_eq!(host(Some("evil.example"), Some("Bearer s3cret")), Ok(()));
        assert_eq!(
            host(Some("evil.example"), Some("Bearer nope")),
            Err(Denied::WrongToken)
        );
    }

    #[test]
    fn on_loopback_reads_are_open_and_changes_need_the_token() {
        let access = Access::new(Some(Token::new("s3cret")), true);
        assert_eq!(access.check(Need::Read, &with(None)), Ok(()));
        assert_eq!(
            access.check(Need::Change, &with(None)),
            Err(Denied::NoToken)
        );
        assert_eq!(
            access.check(Need::Change, &with(Some("Bearer nope"))),
            Err(Denied::WrongToken)
        );
        assert_eq!(
            access.check(Need::Change, &with(Some("bearer s3cret"))),
            Ok(())
        );
        assert_eq!(
            access.check(Need::Change, &with(Some("Basic s3cret"))),
            Err(Denied::NoToken)
        );
    }

    #[test]
    fn beyond_loopback_reads_need_the_token_too() {
        let access = Access::new(Some(Token::new("s3cret")), false);
        assert_eq!(access.check(Need::Read, &with(None)), Err(Denied::NoToken));
        assert_eq!(
            access.check(Need::Read, &with(Some("Bearer s3cret"))),
            Ok(())
        );
    }

    #[test]
    fn without_a_token_nothing_changes() {
        let access = Access::new(None, true);
        assert_eq!(access.check(Need::Read, &with(None)), Ok(()));
        assert_eq!(
            access.check(Need::Read, &with(Some("Bearer anything"))),
            Ok(()),
            "a read is a read, whatever header it carries"
        );
        assert_eq!(
            access.check(Need::Change, &with(Some("Bearer anything"))),
            Err(Denied::ChangesOff)
        );
    }

    #[test]
    fn the_token_is_never_printed() {
        let args = HttpTokenArgs {
            http_token: Some("hush".into()),
            http_token_file: None,
        };
        assert!(!format!("{args:?}").contains("hush"));
        let token = args.given().unwrap().unwrap();
        assert!(!format!("{token:?}").contains("hush"));
        let twice = HttpTokenArgs {
            http_token: Some("a".into()),
            http_token_file: Some("/x".into()),
        };
        assert!(twice.given().unwrap_err().contains("given twice"));
    }
}
