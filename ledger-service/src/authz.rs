//! Who may do what, the Kubernetes way.
//!
//! Callers send `authorization: Bearer <token>`. The Kubernetes API server
//! says whose token it is (a TokenReview) and whether that user may `get`
//! the virtual subresource `openmodels/audit` of API group
//! `serving.openmodel.dev` in a namespace, or cluster-wide (a
//! SubjectAccessReview). RBAC grants it like any other permission:
//!
//! ```yaml
//! rules:
//!   - apiGroups: [serving.openmodel.dev]
//!     resources: [openmodels/audit]
//!     verbs: [get]
//! ```
//!
//! [`Access`] is that question asked of an authority; [`KubeAccess`] asks
//! the API server. [`Gate`] turns answers into decisions for what an
//! operation [`Need`]s, remembers them for a few seconds (so a page of
//! requests costs the API server one review, and a revoked permission or
//! token stops working within [`ALLOWED_TTL`]), and words the refusals:
//! [`Error::Unauthenticated`] without a token the API server accepts,
//! [`Error::PermissionDenied`] without the permission, naming the
//! permission to ask for.
//!
//! Bounded against callers who send garbage: a token longer than
//! [`MAX_TOKEN_BYTES`] is refused unread; refused tokens are remembered
//! apart from accepted ones, so a stream of bad tokens cannot push good ones
//! out; each cache holds a bounded number of answers and forgets the oldest
//! first; and at most `--max-reviews` reviews are in flight at once, the
//! callers beyond waiting (and finding the answer cached when they may go
//! on, if another caller asked the same).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::calls::CallerKey;
use crate::{Error, Result};

/// The API group of the permission.
pub const AUDIT_API_GROUP: &str = "serving.openmodel.dev";
/// The resource of the permission.
pub const AUDIT_RESOURCE: &str = "openmodels";
/// The (virtual) subresource of the permission.
pub const AUDIT_SUBRESOURCE: &str = "audit";
/// The verb of the permission.
pub const AUDIT_VERB: &str = "get";

/// How long a granted permission or accepted token is remembered.
pub const ALLOWED_TTL: Duration = Duration::from_secs(10);
/// How long a refusal is remembered (short: a new RoleBinding should work
/// soon; long enough that a stream of bad requests is not a stream of
/// reviews).
pub const DENIED_TTL: Duration = Duration::from_secs(2);

/// The longest bearer token read: tokens the Kubernetes API server issues
/// are a few KiB at most.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// A caller, as the Kubernetes API server authenticated them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct User {
    /// User name, e.g. `system:serviceaccount:search:auditor`.
    pub username: String,
    /// User UID, when the authenticator knows one.
    pub uid: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes (passed on to authorization as they came).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Where a read applies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One namespace.
    Namespace(String),
    /// Every namespace: queries not filtered by namespace, and entries about
    /// no namespaced object.
    Cluster,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Namespace(ns) => write!(f, "in namespace {ns:?}"),
            Scope::Cluster => f.write_str("cluster-wide"),
        }
    }
}

/// The authority that knows tokens and permissions.
pub trait Access: Send + Sync + 'static {
    /// Whose token this is; `None` when the authority does not accept it.
    fn authenticate(&self, token: &str) -> impl Future<Output = Result<Option<User>>> + Send;

    /// Whether `user` may `get openmodels/audit` (group
    /// `serving.openmodel.dev`) in `scope`.
    fn may_read(&self, user: &User, scope: &Scope) -> impl Future<Output = Result<bool>> + Send;

    /// The audiences tokens are accepted for (empty: the authority's own),
    /// for the message that tells a refused caller which token to get.
    fn audiences(&self) -> &[String] {
        &[]
    }
}

/// [`Access`] answered by the Kubernetes API server. The client's own
/// identity needs `create` on `tokenreviews` (authentication.k8s.io) and
/// `subjectaccessreviews` (authorization.k8s.io), as the built-in ClusterRole
/// `system:auth-delegator` grants.
///
/// Tokens are reviewed for the service's audiences (`--token-audience`):
/// the API server accepts only tokens issued for one of them, so a token
/// a caller sends here cannot be one that works against the API server
/// itself, unless the API server's own audience is in the list.
#[derive(Clone)]
pub struct KubeAccess {
    client: kube::Client,
    audiences: Vec<String>,
}

impl KubeAccess {
    /// Asks the API server `client` talks to, accepting tokens issued for
    /// one of `audiences` (the API server's own when empty).
    pub fn new(client: kube::Client, audiences: Vec<String>) -> KubeAccess {
        KubeAccess { client, audiences }
    }
}

fn unavailable(review: &str, e: kube::Error) -> Error {
    Error::AuthorizationUnavailable(format!(
        "creating a {review}: {e} (the service's own identity needs `create` on {review}s, e.g. \
         the ClusterRole system:auth-delegator)"
    ))
}

impl Access for KubeAccess {
    async fn authenticate(&self, token: &str) -> Result<Option<User>> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| unavailable("TokenReview", e))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            tracing::debug!(error = ?status.error, "token not accepted");
            return Ok(None);
        }
        let info = status.user.unwrap_or_default();
        let Some(username) = info.username.filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        Ok(Some(User {
            username,
            uid: info.uid.filter(|u| !u.is_empty()),
            groups: info.groups.unwrap_or_default(),
            extra: info.extra.unwrap_or_default(),
        }))
    }

    fn audiences(&self) -> &[String] {
        &self.audiences
    }

    async fn may_read(&self, user: &User, scope: &Scope) -> Result<bool> {
        let namespace = match scope {
            Scope::Namespace(ns) => Some(ns.clone()),
            Scope::Cluster => None,
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.username.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(AUDIT_API_GROUP.into()),
                    resource: Some(AUDIT_RESOURCE.into()),
                    subresource: Some(AUDIT_SUBRESOURCE.into()),
                    verb: Some(AUDIT_VERB.into()),
                    namespace,
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| unavailable("SubjectAccessReview", e))?;
        Ok(reviewed
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true)))
    }
}

/// What an operation needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Any user the API server authenticates (checkpoints and consistency
    /// proofs: hashes only).
    Authenticated,
    /// `get openmodels/audit` in a scope (entries).
    Read(Scope),
    /// A user named by `--append-user`.
    Append,
}

/// The token in an `authorization` header value: `Bearer <token>` (the
/// scheme in any case, as RFC 9110 allows), at most [`MAX_TOKEN_BYTES`].
pub fn bearer_token(header: Option<&[u8]>) -> Result<&str> {
    let header = header.ok_or_else(|| {
        Error::Unauthenticated(
            "no bearer token: send the header `authorization: Bearer <token>` with a token the \
             Kubernetes API server accepts (e.g. from `kubectl create token <service account>`)"
                .into(),
        )
    })?;
    if header.len() > MAX_TOKEN_BYTES + "Bearer ".len() {
        return Err(Error::Unauthenticated(format!(
            "the authorization header is {} bytes; a bearer token may have at most \
             {MAX_TOKEN_BYTES} (tokens from the Kubernetes API server are far shorter)",
            header.len()
        )));
    }
    let malformed = || {
        Error::Unauthenticated(
            "the authorization header is not `Bearer <token>` (one visible-ASCII token)".into(),
        )
    };
    let header = std::str::from_utf8(header).map_err(|_| malformed())?;
    let (scheme, token) = header.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(malformed());
    }
    Ok(token)
}

/// Who is calling, for counting calls and remembering answers: the SHA-256
/// of the bearer token (of the whole header when it holds none that
/// parses; all callers without a header are one caller). Tokens themselves
/// are never kept.
pub(crate) fn token_key(header: Option<&[u8]>) -> CallerKey {
    let Some(raw) = header else {
        return [0; 32];
    };
    let token = bearer_token(Some(raw)).map_or(raw, str::as_bytes);
    Sha256::digest(token).into()
}

/// Why a token was refused, and how to get one the service takes, for the
/// `audiences` tokens are reviewed for (empty: the API server's own).
fn refusal(audiences: &[String]) -> String {
    let why = "the Kubernetes API server did not accept the bearer token (expired, revoked, or \
               meant for another cluster";
    match audiences.first() {
        None => format!("{why}): get a new one, e.g. with `kubectl create token`"),
        Some(first) => format!(
            "{why}, or issued for another audience than this service's, {audiences:?}): get \
             one for it, e.g. `kubectl create token <service-account> --audience {first}`"
        ),
    }
}

/// Answers remembered for a while: at most `capacity`, the oldest forgotten
/// first when full.
struct TtlCache<K, V> {
    capacity: usize,
    inner: Mutex<CacheInner<K, V>>,
}

struct CacheInner<K, V> {
    entries: HashMap<K, (V, Instant)>,
    /// Keys in the order they were inserted, with the expiry they were
    /// inserted with (a key inserted again is found by its newer expiry).
    order: VecDeque<(K, Instant)>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    fn new(capacity: usize) -> Self {
        TtlCache {
            capacity: capacity.max(1),
            inner: Mutex::new(CacheInner {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner<K, V>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &K) -> Option<V> {
        self.lock()
            .entries
            .get(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(value, _)| value.clone())
    }

    fn insert(&self, key: K, value: V, ttl: Duration) {
        let mut inner = self.lock();
        let expires = Instant::now() + ttl;
        while inner.order.len() >= self.capacity {
            let Some((oldest, inserted)) = inner.order.pop_front() else {
                break;
            };
            if inner
                .entries
                .get(&oldest)
                .is_some_and(|(_, e)| *e == inserted)
            {
                inner.entries.remove(&oldest);
            }
        }
        inner.order.push_back((key.clone(), expires));
        inner.entries.insert(key, (value, expires));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// Decisions for the service: authentication, then authorization of what
/// an operation needs, with answers remembered for a few seconds.
pub struct Gate<A> {
    access: A,
    append_users: BTreeSet<String>,
    /// Accepted tokens, by SHA-256 (the tokens themselves are not kept).
    accepted: TtlCache<CallerKey, User>,
    /// Refused tokens, apart, so that they cannot push accepted ones out.
    refused: TtlCache<CallerKey, ()>,
    decisions: TtlCache<(User, Scope), bool>,
    /// Reviews in flight.
    reviews: Semaphore,
}

impl<A: Access> Gate<A> {
    /// Decides with `access`; `append_users` may append. At most
    /// `max_reviews` questions are asked of `access` at once, and at most
    /// `cache_entries` answers of each kind are remembered.
    pub fn new(
        access: A,
        append_users: impl IntoIterator<Item = String>,
        max_reviews: usize,
        cache_entries: usize,
    ) -> Gate<A> {
        Gate {
            access,
            append_users: append_users.into_iter().collect(),
            accepted: TtlCache::new(cache_entries),
            refused: TtlCache::new(cache_entries),
            decisions: TtlCache::new(cache_entries),
            reviews: Semaphore::new(max_reviews.max(1)),
        }
    }

    /// The remembered answer for a token, if any: `Some(None)` when it was
    /// refused.
    fn remembered(&self, key: &CallerKey) -> Option<Option<User>> {
        if let Some(user) = self.accepted.get(key) {
            return Some(Some(user));
        }
        self.refused.get(key).map(|()| None)
    }

    /// True when `user` may append.
    pub(crate) fn may_append(&self, user: &User) -> bool {
        self.append_users.contains(&user.username)
    }

    /// True when `caller`'s token was accepted lately as one of a user who
    /// may append (nothing is asked of the API server).
    pub(crate) fn is_known_appender(&self, caller: &CallerKey) -> bool {
        self.accepted
            .get(caller)
            .is_some_and(|user| self.may_append(&user))
    }

    /// The user of an `authorization` header value.
    pub async fn authenticate(&self, header: Option<&[u8]>) -> Result<User> {
        let token = bearer_token(header)?;
        let key: CallerKey = Sha256::digest(token.as_bytes()).into();
        let user = match self.remembered(&key) {
            Some(user) => user,
            None => {
                let _permit = self.reviews.acquire().await.map_err(|_| {
                    Error::AuthorizationUnavailable("the service is shutting down".into())
                })?;
                // Another caller may have asked about the same token while
                // this one waited.
                match self.remembered(&key) {
                    Some(user) => user,
                    None => {
                        let user = self.access.authenticate(token).await?;
                        match &user {
                            Some(user) => self.accepted.insert(key, user.clone(), ALLOWED_TTL),
                            None => self.refused.insert(key, (), DENIED_TTL),
                        }
                        user
                    }
                }
            }
        };
        user.ok_or_else(|| Error::Unauthenticated(refusal(self.access.audiences())))
    }

    /// Whether `user` has what `need` asks for; the refusal names the
    /// permission to ask for.
    pub async fn authorize(&self, user: &User, need: &Need) -> Result<()> {
        let scope = match need {
            Need::Authenticated => return Ok(()),
            Need::Append if self.append_users.contains(&user.username) => return Ok(()),
            Need::Append => {
                let allowed: Vec<&str> = self.append_users.iter().map(String::as_str).collect();
                return Err(Error::PermissionDenied(format!(
                    "user {:?} may not append to the ledger: only {allowed:?} may (the service's \
                     --append-user flags)",
                    user.username
                )));
            }
            Need::Read(scope) => scope,
        };
        let key = (user.clone(), scope.clone());
        let allowed = match self.decisions.get(&key) {
            Some(allowed) => allowed,
            None => {
                let _permit = self.reviews.acquire().await.map_err(|_| {
                    Error::AuthorizationUnavailable("the service is shutting down".into())
                })?;
                match self.decisions.get(&key) {
                    Some(allowed) => allowed,
                    None => {
                        let allowed = self.access.may_read(user, scope).await?;
                        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
                        self.decisions.insert(key, allowed, ttl);
                        allowed
                    }
                }
            }
        };
        if allowed {
            return Ok(());
        }
        let hint = match scope {
            Scope::Namespace(_) => "a Role with that rule and a RoleBinding in that namespace",
            Scope::Cluster => {
                "a ClusterRole with that rule and a ClusterRoleBinding; entries about no single \
                 namespace and queries not filtered by namespace need it (filter by a namespace \
                 to read just that one)"
            }
        };
        Err(Error::PermissionDenied(format!(
            "user {:?} may not read audit entries {scope}: that needs `{AUDIT_VERB}` on \
             `{AUDIT_RESOURCE}/{AUDIT_SUBRESOURCE}` (API group {AUDIT_API_GROUP}) {scope}, e.g. {hint}",
            user.username
        )))
    }

    /// [`Gate::authenticate`], then [`Gate::authorize`].
    pub async fn check(&self, header: Option<&[u8]>, need: &Need) -> Result<User> {
        let user = self.authenticate(header).await?;
        self.authorize(&user, need).await?;
        Ok(user)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! An [`Access`] from a table, counting the questions it was asked.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Tokens are user names prefixed with `token-`; `grants` lists who may
    /// read where.
    #[derive(Default)]
    pub(crate) struct FakeAccess {
        pub(crate) grants: Vec<(String, Scope)>,
        pub(crate) down: bool,
        pub(crate) asked: AtomicUsize,
    }

    impl FakeAccess {
        pub(crate) fn granting(grants: &[(&str, Scope)]) -> FakeAccess {
            FakeAccess {
                grants: grants
                    .iter()
                    .map(|(u, s)| (u.to_string(), s.clone()))
                    .collect(),
                ..FakeAccess::default()
            }
        }

        fn ask(&self) -> Result<()> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            if self.down {
                return Err(Error::AuthorizationUnavailable("the fake is down".into()));
            }
            Ok(())
        }
    }

    impl Access for FakeAccess {
        async fn authenticate(&self, token: &str) -> Result<Option<User>> {
            self.ask()?;
            Ok(token.strip_prefix("token-").map(|name| User {
                username: name.into(),
                ..User::default()
            }))
        }

        async fn may_read(&self, user: &User, scope: &Scope) -> Result<bool> {
            self.ask()?;
            Ok(self
                .grants
                .iter()
                .any(|(u, s)| *u == user.username && (s == scope || *s == Scope::Cluster)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::fake::FakeAccess;
    use super::*;

    fn ns(name: &str) -> Scope {
        Scope::Namespace(name.into())
    }

    fn gate(access: FakeAccess) -> Gate<FakeAccess> {
        Gate::new(access, ["operator".to_string()], 4, 100)
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        assert_eq!(bearer_token(Some(b"Bearer abc.def")).unwrap(), "abc.def");
        assert_eq!(bearer_token(Some(b"bearer abc")).unwrap(), "abc");
        assert!(
            matches!(bearer_token(None), Err(Error::Unauthenticated(m)) if m.contains("no bearer token"))
        );
        for bad in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Basic dXNlcjpwdw==",
            b"Bearer a b",
            b"Bearer \xff\xfe",
            b"abc",
        ] {
            let err = bearer_token(Some(bad)).unwrap_err();
            assert!(matches!(err, Error::Unauthenticated(_)), "{bad:?}: {err}");
        }
    }

    #[tokio::test]
    async fn decisions_map_to_unauthenticated_and_permission_denied() {
        let gate = gate(FakeAccess::granting(&[
            ("alice", ns("a")),
            ("root", Scope::Cluster),
        ]));
        let alice = Some(&b"Bearer token-alice"[..]);

        // No token, a malformed one, one the API server refuses.
        for header in [None, Some(&b"Bearer"[..]), Some(&b"Bearer nobody"[..])] {
            let err = gate.check(header, &Need::Authenticated).await.unwrap_err();
            assert!(
                matches!(err, Error::Unauthenticated(_)),
                "{header:?}: {err}"
            );
        }

        let user = gate.check(alice, &Need::Authenticated).await.unwrap();
        assert_eq!(user.username, "alice");
        gate.check(alice, &Need::Read(ns("a"))).await.unwrap();
        let err = gate.check(alice, &Need::Read(ns("b"))).await.unwrap_err();
        let Error::PermissionDenied(message) = err else {
            panic!("{err}")
        };
        assert!(
            message.contains("\"alice\"") && message.contains("namespace \"b\""),
            "{message}"
        );
        assert!(
            message.contains("openmodels/audit") && message.contains("RoleBinding"),
            "{message}"
        );
        let err = gate
            .check(alice, &Need::Read(Scope::Cluster))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::PermissionDenied(m) if m.contains("ClusterRoleBinding")),
            "{err}"
        );

        let root = Some(&b"Bearer token-root"[..]);
        gate.check(root, &Need::Read(Scope::Cluster)).await.unwrap();
        gate.check(root, &Need::Read(ns("b"))).await.unwrap();

        // Appending is for the --append-user identities only, whatever they may read.
        let err = gate.check(root, &Need::Append).await.unwrap_err();
        assert!(
            matches!(&err, Error::PermissionDenied(m) if m.contains("--append-user")),
            "{err}"
        );
        gate.check(Some(b"Bearer token-operator"), &Need::Append)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn answers_are_remembered_and_failures_are_not() {
        let gate = gate(FakeAccess::granting(&[("alice", ns("a"))]));
        let alice = Some(&b"Bearer token-alice"[..]);
        for _ in 0..5 {
            gate.check(alice, &Need::Read(ns("a"))).await.unwrap();
            gate.check(alice, &Need::Read(ns("b"))).await.unwrap_err();
        }
        // One TokenReview and two SubjectAccessReviews.
        assert_eq!(gate.access.asked.load(Ordering::SeqCst), 3);

        let down = gate_down();
        for _ in 0..3 {
            let err = down.check(alice, &Need::Authenticated).await.unwrap_err();
            assert!(matches!(err, Error::AuthorizationUnavailable(_)), "{err}");
        }
        assert_eq!(
            down.access.asked.load(Ordering::SeqCst),
            3,
            "errors are asked again"
        );
    }

    fn gate_down() -> Gate<FakeAccess> {
        gate(FakeAccess {
            down: true,
            ..FakeAccess::default()
        })
    }

    #[test]
    fn the_cache_expires_and_stays_bounded_forgetting_the_oldest() {
        let cache = TtlCache::new(100);
        cache.insert(1, "a", Duration::ZERO);
        assert_eq!(cache.get(&1), None, "expired");
        cache.insert(2, "b", Duration::from_secs(60));
        assert_eq!(cache.get(&2), Some("b"));
        for i in 0..150 {
            cache.insert(i + 100, "x", Duration::from_secs(60));
        }
        assert!(cache.len() <= 100);
        assert_eq!(cache.get(&2), None, "the oldest went first");
        assert_eq!(cache.get(&249), Some("x"), "the newest stays");
        // A key inserted again keeps its newer answer.
        cache.insert(249, "y", Duration::from_secs(60));
        for i in 0..99 {
            cache.insert(i + 1000, "z", Duration::from_secs(60));
        }
        assert_eq!(cache.get(&249), Some("y"));
    }

    #[tokio::test]
    async fn a_flood_of_bad_tokens_pushes_no_good_one_out() {
        let gate = gate(FakeAccess::granting(&[("alice", ns("a"))]));
        let alice = Some(&b"Bearer token-alice"[..]);
        gate.check(alice, &Need::Read(ns("a"))).await.unwrap();
        for i in 0..500 {
            let bad = format!("Bearer garbage-{i}");
            gate.authenticate(Some(bad.as_bytes())).await.unwrap_err();
        }
        let asked = gate.access.asked.load(Ordering::SeqCst);
        gate.check(alice, &Need::Read(ns("a"))).await.unwrap();
        assert_eq!(
            gate.access.asked.load(Ordering::SeqCst),
            asked,
            "alice's answers were still remembered"
        );
        // The same bad token again is answered from the cache.
        gate.authenticate(Some(b"Bearer garbage-499"))
            .await
            .unwrap_err();
        assert_eq!(gate.access.asked.load(Ordering::SeqCst), asked);
        assert!(gate.refused.len() <= 100);
    }

    #[tokio::test]
    async fn callers_waiting_for_a_review_find_the_answer_of_the_first() {
        let gate = std::sync::Arc::new(Gate::new(FakeAccess::default(), Vec::new(), 1, 100));
        let callers: Vec<_> = (0..20)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move { gate.authenticate(Some(b"Bearer token-bob")).await })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap().unwrap().username, "bob");
        }
        assert_eq!(gate.access.asked.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_refused_token_is_told_which_audience_to_get() {
        let ledger = refusal(&["openmodel-ledger".into(), "oidc-client".into()]);
        assert!(
            ledger.contains("--audience openmodel-ledger") && ledger.contains("oidc-client"),
            "{ledger}"
        );
        assert!(!refusal(&[]).contains("--audience"), "{}", refusal(&[]));
    }

    #[test]
    fn oversized_tokens_are_refused_unread_and_callers_keyed_by_token() {
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        let err = bearer_token(Some(huge.as_bytes())).unwrap_err();
        assert!(err.to_string().contains("at most 16384"), "{err}");
        assert_eq!(token_key(None), [0; 32]);
        assert_eq!(
            token_key(Some(b"Bearer abc")),
            token_key(Some(b"bearer  abc"))
        );
        assert_ne!(
            token_key(Some(b"Bearer abc")),
            token_key(Some(b"Bearer abd"))
        );
        assert_ne!(token_key(Some(b"garbage")), token_key(None));
    }

    #[tokio::test]
    async fn known_appenders_are_recognized_from_the_cache_only() {
        let gate = gate(FakeAccess::default());
        let operator = token_key(Some(b"Bearer token-operator"));
        assert!(!gate.is_known_appender(&operator), "not reviewed yet");
        gate.authenticate(Some(b"Bearer token-operator"))
            .await
            .unwrap();
        assert!(gate.is_known_appender(&operator));
        gate.authenticate(Some(b"Bearer token-alice"))
            .await
            .unwrap();
        assert!(!gate.is_known_appender(&token_key(Some(b"Bearer token-alice"))));
    }
}
