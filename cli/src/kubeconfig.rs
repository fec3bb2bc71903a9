//! The bearer token to send to the ledger service: `--token` (or
//! `OPENMODEL_TOKEN`), `--token-file`, else the token of the user of the
//! kubeconfig's current context (`--kubeconfig`, else `$KUBECONFIG`, else
//! `~/.kube/config`), read with kube's own kubeconfig types.
//!
//! The service authenticates bearer tokens only (TokenReview), so a
//! kubeconfig user with a client certificate, an exec plugin or an auth
//! provider is refused here with what to pass instead.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use kube::config::{AuthInfo, Kubeconfig};
use openmodel_ledger_service::DEFAULT_TOKEN_AUDIENCE;
use secrecy::ExposeSecret as _;

use crate::cli::ServerArgs;

/// Where the token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// A token string.
    Value(String),
    /// A file holding the token, re-read as it rotates.
    File(PathBuf),
    /// None: the call goes out without one; the reason is told with the
    /// service's UNAUTHENTICATED answer.
    None(String),
}

/// How to make a token the ledger service takes (for the messages that say
/// what to pass instead): one for its audience, by default
/// [`DEFAULT_TOKEN_AUDIENCE`].
pub fn make_one() -> String {
    format!(
        "pass --token \"$(kubectl create token <service-account> -n <namespace> --audience \
         {DEFAULT_TOKEN_AUDIENCE})\", --token-file FILE or OPENMODEL_TOKEN, or use a kubeconfig \
         context whose user has a token for the ledger's audience"
    )
}

/// The token the command line and the kubeconfig give.
pub fn token(args: &ServerArgs) -> Result<Token> {
    match (&args.token, &args.token_file) {
        (Some(_), Some(_)) => bail!(
            "both a token (--token or OPENMODEL_TOKEN) and --token-file are set: pass only one"
        ),
        (Some(token), None) => return Ok(Token::Value(token.clone())),
        (None, Some(file)) => return Ok(Token::File(file.clone())),
        (None, None) => {}
    }
    let Some((config, from)) = load(args.kubeconfig.as_deref())? else {
        return Ok(Token::None(
            "no --token, --token-file or OPENMODEL_TOKEN was given and there is no kubeconfig \
             ($KUBECONFIG is unset and ~/.kube/config does not exist)"
                .into(),
        ));
    };
    from_kubeconfig(&config, args.context.as_deref(), &from)
}

/// The kubeconfig to read, and how to name it: `path`, else the files in
/// `$KUBECONFIG` (merged), else `~/.kube/config` if it exists.
fn load(path: Option<&Path>) -> Result<Option<(Kubeconfig, String)>> {
    if let Some(path) = path {
        let config = Kubeconfig::read_from(path)
            .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
        return Ok(Some((config, path.display().to_string())));
    }
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let config = Kubeconfig::from_env()
            .context("cannot read the kubeconfig files in $KUBECONFIG")?
            .unwrap_or_default();
        return Ok(Some((
            config,
            format!("$KUBECONFIG ({})", list.to_string_lossy()),
        )));
    }
    let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let default = PathBuf::from(home).join(".kube").join("config");
    if !default.is_file() {
        return Ok(None);
    }
    let config = Kubeconfig::read_from(&default)
        .with_context(|| format!("cannot read the kubeconfig {}", default.display()))?;
    Ok(Some((config, default.display().to_string())))
}

/// The token of the user of `context` (default: the current context) in
/// `config`, which was read from `from`.
pub fn from_kubeconfig(config: &Kubeconfig, context: Option<&str>, from: &str) -> Result<Token> {
    let Some(name) = context.or(config.current_context.as_deref()) else {
        return Ok(Token::None(format!(
            "the kubeconfig {from} has no current context and no --context was given"
        )));
    };
    let named = config
        .contexts
        .iter()
        .find(|c| c.name == name)
        .with_context(|| format!("the kubeconfig {from} has no context named {name:?}"))?;
    let Some(user) = named.context.as_ref().and_then(|c| c.user.as_deref()) else {
        return Ok(Token::None(format!(
            "context {name:?} of the kubeconfig {from} names no user"
        )));
    };
    let auth = config
        .auth_infos
        .iter()
        .find(|a| a.name == user)
        .with_context(|| {
            format!("the kubeconfig {from} has no user {user:?} (named by context {name:?})")
        })?
        .auth_info
        .clone()
        .unwrap_or_default();
    user_token(&auth)
        .with_context(|| format!("user {user:?} of context {name:?} in the kubeconfig {from}"))
}

/// The bearer token of one kubeconfig user.
fn user_token(auth: &AuthInfo) -> Result<Token> {
    if let Some(token) = &auth.token {
        return Ok(Token::Value(token.expose_secret().to_owned()));
    }
    if let Some(file) = &auth.token_file {
        return Ok(Token::File(file.into()));
    }
    let refused = |how: &str| -> Result<Token> {
        bail!(
            "authenticates with {how}, which the ledger service cannot check (it accepts bearer \
             tokens, checked with a TokenReview): {}",
            make_one()
        )
    };
    if auth.client_certificate.is_some() || auth.client_certificate_data.is_some() {
        return refused("a client certificate");
    }
    if let Some(exec) = &auth.exec {
        let command = exec.command.as_deref().unwrap_or("a command");
        return refused(&format!("an exec credential plugin ({command})"));
    }
    if let Some(provider) = &auth.auth_provider {
        return refused(&format!("the auth provider {:?}", provider.name));
    }
    if auth.username.is_some() {
        return refused("a user name and password");
    }
    Ok(Token::None("it has no credentials".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(user: &str) -> Kubeconfig {
        Kubeconfig::from_yaml(&format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: main\n\
             clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n\
             contexts:\n- name: main\n  context:\n    cluster: c\n    user: u\n\
             - name: other\n  context:\n    cluster: c\n    user: cert\n\
             users:\n- name: u\n  user:\n{user}\n\
             - name: cert\n  user:\n    client-certificate-data: QUJD\n    client-key-data: QUJD\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_current_context_users_token_is_used() {
        let c = config("    token: abc.def");
        assert_eq!(
            from_kubeconfig(&c, None, "kc").unwrap(),
            Token::Value("abc.def".into())
        );
        let c = config("    tokenFile: /var/run/token");
        assert_eq!(
            from_kubeconfig(&c, None, "kc").unwrap(),
            Token::File("/var/run/token".into())
        );
    }

    #[test]
    fn users_without_a_token_get_told_what_to_pass() {
        let c = config("    token: abc");
        let err = format!(
            "{:#}",
            from_kubeconfig(&c, Some("other"), "kc").unwrap_err()
        );
        assert!(err.contains("client certificate"), "{err}");
        assert!(err.contains("--token"), "{err}");
        assert!(err.contains("kubectl create token"), "{err}");
        assert!(err.contains("\"cert\""), "{err}");

        let c = config(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws",
        );
        let err = format!("{:#}", from_kubeconfig(&c, None, "kc").unwrap_err());
        assert!(err.contains("exec credential plugin (aws)"), "{err}");

        let err = format!("{:#}", from_kubeconfig(&c, Some("nope"), "kc").unwrap_err());
        assert!(err.contains("no context named \"nope\""), "{err}");

        let c = config("    {}");
        assert!(matches!(
            from_kubeconfig(&c, None, "kc").unwrap(),
            Token::None(_)
        ));
        let mut c = config("    token: abc");
        c.current_context = None;
        assert!(matches!(
            from_kubeconfig(&c, None, "kc").unwrap(),
            Token::None(_)
        ));
    }

    #[test]
    fn flags_come_first_and_only_one_of_them() {
        let args = ServerArgs {
            token: Some("t".into()),
            ..ServerArgs::default()
        };
        assert_eq!(token(&args).unwrap(), Token::Value("t".into()));
        let args = ServerArgs {
            token_file: Some("f".into()),
            ..ServerArgs::default()
        };
        assert_eq!(token(&args).unwrap(), Token::File("f".into()));
        let args = ServerArgs {
            token: Some("t".into()),
            token_file: Some("f".into()),
            ..ServerArgs::default()
        };
        assert!(token(&args).unwrap_err().to_string().contains("only one"));
    }
}
