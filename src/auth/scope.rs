//! Actions and the Docker token scopes that name them (`repository:<name>:pull,push`).

use super::super::metadata::Role;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// The actions a role allows.
    pub fn of_role(role: Role) -> &'static [Action] {
        match role {
            Role::Read => &[Action::Pull],
            Role::Write => &[Action::Pull, Action::Push],
            Role::Admin => &[Action::Pull, Action::Push, Action::Delete],
        }
    }
}

/// One requested or granted scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Repository {
        name: String,
        actions: BTreeSet<Action>,
    },
    /// `registry:catalog:*`.
    Catalog,
    /// `registry:operator:*`: the operator's rights on an RPC bound beyond loopback. Granted
    /// only to an administrator's credential whose cap is Admin, and only when asked for: a
    /// token minted for a repository's pull carries nothing of it.
    Operator,
}

impl Scope {
    /// Parses one scope; unknown actions (`*` included, which means all) are kept as what they
    /// name, unknown resource types are ignored (None).
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        match kind {
            "repository" | "repository(plugin)" => {
                let mut set = BTreeSet::new();
                for a in actions.split(',') {
                    match a {
                        "pull" => {
                            set.insert(Action::Pull);
                        }
                        "push" => {
                            set.insert(Action::Push);
                        }
                        "delete" => {
                            set.insert(Action::Delete);
                        }
                        "*" => set.extend([Action::Pull, Action::Push, Action::Delete]),
                        _ => {}
                    }
                }
                Some(Scope::Repository { name: name.to_string(), actions: set })
            }
            "registry" if name == "catalog" => Some(Scope::Catalog),
            "registry" if name == "operator" => Some(Scope::Operator),
            _ => None,
        }
    }

    /// The scope as the challenge and the token's `scope` field write it.
    pub fn to_challenge(&self) -> String {
        match self {
            Scope::Repository { name, actions } => {
                let list: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
                format!("repository:{name}:{}", list.join(","))
            }
            Scope::Catalog => "registry:catalog:*".to_string(),
            Scope::Operator => "registry:operator:*".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip() {
        let s = Scope::parse("repository:a/b:pull,push").unwrap();
        assert_eq!(s.to_challenge(), "repository:a/b:pull,push");
        assert_eq!(Scope::parse("repository:x:*").unwrap().to_challenge(), "repository:x:pull,push,delete");
        assert_eq!(Scope::parse("registry:catalog:*"), Some(Scope::Catalog));
        assert_eq!(Scope::parse("registry:operator:*"), Some(Scope::Operator));
        assert_eq!(Scope::parse("garbage"), None);
        // A registry host with a port in the name still splits at the last colon.
        assert!(matches!(Scope::parse("repository:a:b"), Some(Scope::Repository { name, .. }) if name == "a"));
    }
}
