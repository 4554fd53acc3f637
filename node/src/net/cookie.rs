//! The cluster's shared secret: where it comes from, and the rule that keeps the
//! development cookie on loopback.
//!
//! A cookie is given one way: `--cookie` (visible to anyone who can run `ps`),
//! `NODE_COOKIE` (visible only to the same user and root, through `/proc/PID/environ`) or
//! `--cookie-file` (only the path is visible). Giving it two ways at once is an error
//! rather than a silent precedence rule. The secret itself is never logged: nothing here
//! implements `Display`, and [`Cookie`]'s `Debug` prints no more than its source.

use std::path::{Path, PathBuf};

use clap::Args;

/// The cookie used when none is given and every address involved is loopback: fine for
/// trying the cluster on one machine, refused for anything reachable from the network.
pub const DEV_COOKIE: &str = "counter-cluster-dev-cookie";

/// Largest cookie file read (a cookie is a line, not a document).
const MAX_COOKIE_FILE_BYTES: u64 = 4096;

/// Where the secret may come from (shared by nodes and client commands).
#[derive(Clone, Default, Args)]
pub(crate) struct CookieArgs {
    /// The cluster's shared secret, which every node and client must present. A node
    /// listening beyond loopback refuses to start without one; on loopback the default
    /// is a development cookie. Anyone on the machine can read a command line with
    /// `ps`: prefer NODE_COOKIE or --cookie-file.
    #[arg(long, env = "NODE_COOKIE", hide_env_values = true, value_parser = parse_cookie)]
    pub cookie: Option<String>,
    /// A file whose first line is the shared secret (surrounding whitespace is ignored).
    /// It should be readable by the node's user only.
    #[arg(long, value_name = "PATH", env = "NODE_COOKIE_FILE")]
    pub cookie_file: Option<PathBuf>,
}

impl std::fmt::Debug for CookieArgs {
    // By hand, so that printing the command line never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieArgs")
            .field("cookie", &self.cookie.as_ref().map(|_| "<hidden>"))
            .field("cookie_file", &self.cookie_file)
            .finish()
    }
}

/// A resolved secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Cookie {
    secret: String,
    development: bool,
}

impl std::fmt::Debug for Cookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookie")
            .field("development", &self.development)
            .finish_non_exhaustive()
    }
}

impl Cookie {
    /// The development cookie.
    pub(crate) fn development() -> Self {
        Self {
            secret: DEV_COOKIE.to_string(),
            development: true,
        }
    }

    /// A cookie given by the user.
    pub(crate) fn given(secret: String) -> Self {
        Self {
            secret,
            development: false,
        }
    }

    /// The secret, for ractor_cluster's handshake.
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether this is [`DEV_COOKIE`].
    pub(crate) fn is_development(&self) -> bool {
        self.development
    }
}

impl CookieArgs {
    /// The cookie given, if any. Reads `--cookie-file` now.
    pub(crate) fn given(&self) -> Result<Option<Cookie>, String> {
        match (&self.cookie, &self.cookie_file) {
            (Some(_), Some(_)) => Err(
                "the cookie is given twice: use one of --cookie, NODE_COOKIE, --cookie-file \
                 (NODE_COOKIE_FILE)"
                    .into(),
            ),
            (Some(secret), None) => Ok(Some(Cookie::given(secret.clone()))),
            (None, Some(path)) => read_secret_file(path, "cookie").map(|s| Some(Cookie::given(s))),
            (None, None) => Ok(None),
        }
    }

    /// The cookie given, or the development cookie (for clients: a wrong one only fails
    /// authentication, with an error that says so).
    pub(crate) fn or_development(&self) -> Result<Cookie, String> {
        Ok(self.given()?.unwrap_or_else(Cookie::development))
    }
}

fn parse_cookie(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the cookie must not be empty".into());
    }
    Ok(s.to_string())
}

/// Reads a secret (the cookie, the HTTP token) from the first line of a file, which
/// must be small and should be readable by its owner only; `what` names it in errors.
pub(crate) fn read_secret_file(path: &Path, what: &str) -> Result<String, String> {
    let shown = path.display();
    let metadata =
        std::fs::metadata(path).map_err(|e| format!("cannot read the {what} file {shown}: {e}"))?;
    if !metadata.is_file() {
        return Err(format!("the {what} file {shown} is not a regular file"));
    }
    if metadata.len() > MAX_COOKIE_FILE_BYTES {
        return Err(format!(
            "the {what} file {shown} is {} bytes: a {what} is one line (at most {MAX_COOKIE_FILE_BYTES} bytes)",
            metadata.len()
        ));
    }
    warn_if_shared(path, &metadata, what);
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} file {shown}: {e}"))?;
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.is_empty() {
        return Err(format!("the {what} file {shown} is empty"));
    }
    Ok(secret.to_string())
}

#[cfg(unix)]
fn warn_if_shared(path: &Path, metadata: &std::fs::Metadata, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if metadata.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "the {what} file can be read by other users (chmod 600 it)"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path, _metadata: &std::fs::Metadata, _what: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, contents.as_bytes()).unwrap();
        file
    }

    fn args(cookie: Option<&str>, path: Option<&Path>) -> CookieArgs {
        CookieArgs {
            cookie: cookie.map(str::to_string),
            cookie_file: path.map(Path::to_path_buf),
        }
    }

    #[test]
    fn a_cookie_file_gives_its_first_line_trimmed() {
        let f = file("  s3cret \nignored\n");
        let cookie = args(None, Some(f.path())).given().unwrap().unwrap();
        assert_eq!(cookie.secret(), "s3cret");
        assert!(!cookie.is_development());
        assert!(!format!("{cookie:?}").contains("s3cret"));
        let given = args(Some("hush"), None);
        assert!(!format!("{given:?}").contains("hush"));
    }

    #[test]
    fn bad_cookie_files_are_clear_errors() {
        let empty = file("\n  \n");
        let err = args(None, Some(empty.path())).given().unwrap_err();
        assert!(err.contains("is empty"), "{err}");

        let huge = file(&"x".repeat(5000));
        let err = args(None, Some(huge.path())).given().unwrap_err();
        assert!(err.contains("one line"), "{err}");

        let missing = Path::new("/nonexistent/cookie");
        let err = args(None, Some(missing)).given().unwrap_err();
        assert!(
            err.contains("cannot read the cookie file /nonexistent/cookie"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let err = args(None, Some(dir.path())).given().unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_cookie_given_twice_is_refused() {
        let f = file("a");
        let err = args(Some("b"), Some(f.path())).given().unwrap_err();
        assert!(err.contains("given twice"), "{err}");
    }

    #[test]
    fn no_cookie_means_development_only_when_asked() {
        assert_eq!(args(None, None).given().unwrap(), None);
        assert!(args(None, None).or_development().unwrap().is_development());
    }
}
