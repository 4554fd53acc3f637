//! Whose session is whose: ractor_cluster names a session `name@host`, and a client's
//! node name starts with [`CLIENT_NAME_PREFIX`], which no member's name may.

/// Node names of short-lived clients start with this (a character node names may not
/// contain), so their sessions are told apart from cluster members.
pub(crate) const CLIENT_NAME_PREFIX: &str = "~client";

/// The node-name part of ractor_cluster's `name@host` session names.
pub(crate) fn session_node_name(session_name: &str) -> &str {
    session_name
        .split_once('@')
        .map_or(session_name, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_name_gives_its_node_name() {
        assert_eq!(session_node_name("worker-1@10.0.0.2:4697"), "worker-1");
        assert_eq!(session_node_name("plain"), "plain");
    }
}
