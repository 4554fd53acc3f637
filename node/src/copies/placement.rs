//! Where a node's copy lives: a pure function of the membership, so every node
//! computes it alike.
//!
//! The ring of names: the node and every member up that keeps copies, in name order,
//! the last followed by the first. A node's store is copied to the first member up after it on the ring
//! (its successor). So each node keeps the copy of its predecessor's store, a node that
//! joins takes over the copy of the node before it, and a node found down has its
//! place taken by the next one up.

/// The member that keeps the copy of `me`'s store, given the names of the members up
/// (`me` among them or not, in any order) and the number of copies wanted (`copies`,
/// the node's own store included): `None` with one copy, or no other member up.
pub(crate) fn keeper_of(me: &str, up: &[String], copies: u32) -> Option<String> {
    if copies < 2 {
        return None;
    }
    let after = up.iter().filter(|n| n.as_str() > me).min();
    let first = up.iter().filter(|n| n.as_str() != me).min();
    after.or(first).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_node_is_copied_to_its_successor_on_the_ring_of_names() {
        let up = names(&["c", "a", "b"]);
        assert_eq!(keeper_of("a", &up, 2).as_deref(), Some("b"));
        assert_eq!(keeper_of("b", &up, 2).as_deref(), Some("c"));
        // The last wraps around to the first.
        assert_eq!(keeper_of("c", &up, 2).as_deref(), Some("a"));
        // Whether or not the list names the node itself.
        assert_eq!(keeper_of("a", &names(&["b", "c"]), 2).as_deref(), Some("b"));
    }

    #[test]
    fn a_member_down_is_passed_over_and_a_lone_node_has_no_copy() {
        // "b" is down: "a"'s copy goes to the next one up.
        assert_eq!(keeper_of("a", &names(&["a", "c"]), 2).as_deref(), Some("c"));
        assert_eq!(keeper_of("a", &names(&["a"]), 2), None);
        assert_eq!(keeper_of("a", &[], 2), None);
        // One copy: the node's own store only.
        assert_eq!(keeper_of("a", &names(&["a", "b"]), 1), None);
    }

    #[test]
    fn every_node_computes_the_same_placement_and_each_keeps_one_copy() {
        let up = names(&["n3", "n1", "n4", "n2"]);
        let mut kept: Vec<String> = up.iter().filter_map(|n| keeper_of(n, &up, 2)).collect();
        kept.sort();
        assert_eq!(kept, names(&["n1", "n2", "n3", "n4"]));
    }
}
