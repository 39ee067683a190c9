//! What every use-case test is built from: fixtures, a [`Harness`] that
//! assembles an [`App`] on mocked ports, and a [`UseCase`] driver that runs
//! each single-unit-of-work use case the same way so failure and retry
//! rules can be checked across all of them in one table.
//!
//! The harness's unit-of-work factory is a `MockUnitOfWorkFactory` that
//! hands out prepared `MockUnitOfWork`s in order, checks the context and the
//! mode of every `begin`, and keeps a count of units of work that are open
//! (incremented in `begin`, decremented in `commit`/`rollback`). The count
//! is how the auto-rename tests prove the title generator never runs while
//! a transaction is open.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mockall::Sequence;
use weft_app::{App, AppConfig, AppError, Deps, Idempotency, Render, RetryPolicy};
use weft_domain::{
    Attachments, Content, ContentInput, CreateThread, IdempotencyKey, ListParams, Message,
    MessageId, MessagePatch, Metadata, MetadataPatch, NewMessage, Page, RequestFingerprint,
    RequestId, Role, StoredResponse, Thread, ThreadId, ThreadPatch, Timestamp, Title,
    ToolResources, UserId,
};
use weft_ports::mocks::{
    MockClock, MockIdSource, MockTitleGenerator, MockUnitOfWork, MockUnitOfWorkFactory,
};
use weft_ports::{
    Appended, Mode, PortError, RequestContext, TitleError, TitleGenerator, TxObserver, TxOutcome,
};

// ---------------------------------------------------------------- fixtures

/// What the mocked clock says, in Unix seconds.
pub const NOW_SECS: i64 = 1_750_000_000;
/// The idempotency replay window, 24 h.
pub const DAY_SECS: i64 = 86_400;

/// The mocked clock's time.
pub fn now() -> Timestamp {
    Timestamp::from_unix_seconds(NOW_SECS)
}

/// `secs` seconds from [`now`] (negative: before).
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_seconds(NOW_SECS + secs)
}

/// The request every test runs as.
pub fn ctx() -> RequestContext {
    RequestContext::new(
        UserId::parse("user_alice").unwrap(),
        RequestId::parse("req-use-case-test").unwrap(),
        None,
    )
}

/// A fixed thread id.
pub fn thread_id(n: u128) -> ThreadId {
    ThreadId::parse(&format!("thread_{n:032x}")).unwrap()
}

/// A fixed message id.
pub fn message_id(n: u128) -> MessageId {
    MessageId::parse(&format!("msg_{n:032x}")).unwrap()
}

/// The `k`-th thread id the mocked id source mints (from 1).
pub fn minted_thread_id(k: u32) -> ThreadId {
    thread_id(0xa000 + u128::from(k))
}

/// The `k`-th message id the mocked id source mints (from 1).
pub fn minted_message_id(k: u32) -> MessageId {
    message_id(0xb000 + u128::from(k))
}

/// Valid content holding `s`.
pub fn text(s: &str) -> Content {
    Content::parse(ContentInput::Text(s.to_owned())).unwrap()
}

/// A title.
pub fn title(s: &str) -> Title {
    Title::parse(s).unwrap()
}

/// Metadata of the given pairs.
pub fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    Metadata::parse(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
    .unwrap()
}

/// Metadata with `n` pairs `k00 = v`, `k01 = v`, …
pub fn metadata_with(n: usize) -> Metadata {
    Metadata::parse(
        (0..n)
            .map(|i| (format!("k{i:02}"), "v".to_owned()))
            .collect(),
    )
    .unwrap()
}

/// A metadata patch; `None` removes the key.
pub fn metadata_patch(pairs: &[(&str, Option<&str>)]) -> MetadataPatch {
    let map: BTreeMap<String, Option<String>> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
        .collect();
    MetadataPatch::parse(map).unwrap()
}

/// A new message of `role` saying `s`.
pub fn new_message(role: Role, s: &str) -> NewMessage {
    NewMessage {
        role,
        content: text(s),
        attachments: Attachments::default(),
        metadata: Metadata::default(),
    }
}

/// A stored thread: created 1000 s ago, updated 500 s ago, two messages, no title.
pub fn thread(n: u128) -> Thread {
    Thread {
        id: thread_id(n),
        created_at: at(-1000),
        updated_at: at(-500),
        metadata: metadata(&[("topic", "gpu")]),
        tool_resources: ToolResources::default(),
        title: None,
        message_count: 2,
    }
}

/// A stored message `n` of thread `t`, created 900 s ago.
pub fn message(t: u128, n: u128, role: Role, s: &str) -> Message {
    Message {
        id: message_id(n),
        thread_id: thread_id(t),
        created_at: at(-900),
        role,
        content: text(s),
        attachments: Attachments::default(),
        metadata: metadata(&[("lang", "en")]),
    }
}

/// A page of `items`.
pub fn page<T>(items: Vec<T>, has_more: bool) -> Page<T> {
    Page { items, has_more }
}

/// The create command the driver uses: one user message, metadata, a title.
pub fn create_cmd() -> CreateThread {
    CreateThread::new(
        vec![new_message(Role::User, "hello")],
        metadata(&[("team", "infra")]),
        ToolResources::default(),
        Some(title("Infra")),
    )
    .unwrap()
}

/// An `Idempotency-Key` with the fingerprint of a request whose body is `body`.
pub fn idem(key: &str, body: serde_json::Value) -> Idempotency {
    Idempotency {
        key: IdempotencyKey::parse(key).unwrap(),
        fingerprint: RequestFingerprint::new("POST", "/v1/threads", Some(&body)),
    }
}

/// A recorded response.
pub fn stored(body: &str) -> StoredResponse {
    StoredResponse {
        body: body.to_owned(),
    }
}

/// What [`render_thread`] answers for `t`.
pub fn rendered_thread(t: &Thread) -> StoredResponse {
    stored(&format!(
        "thread {} created {} updated {} count {} title {:?}",
        t.id,
        t.created_at.unix_seconds(),
        t.updated_at.unix_seconds(),
        t.message_count,
        t.title.as_ref().map(Title::as_str)
    ))
}

/// What [`render_message`] answers for `m`.
pub fn rendered_message(m: &Message) -> StoredResponse {
    stored(&format!(
        "message {} of {} created {} by {} says {:?}",
        m.id,
        m.thread_id,
        m.created_at.unix_seconds(),
        m.role,
        m.content.plain_text()
    ))
}

/// A renderer standing in for the HTTP layer's wire format.
pub fn render_thread() -> Render<Thread> {
    Arc::new(rendered_thread)
}

/// A renderer standing in for the HTTP layer's wire format.
pub fn render_message() -> Render<Message> {
    Arc::new(rendered_message)
}

// ---------------------------------------------------------------- errors

/// A port failure a test injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    NotFound,
    InvalidCursor,
    Duplicate,
    Conflict,
    Unavailable,
    Unexpected,
}

impl Fail {
    /// The injected error.
    pub fn err(self) -> PortError {
        match self {
            Self::NotFound => PortError::NotFound,
            Self::InvalidCursor => PortError::InvalidCursor,
            Self::Duplicate => PortError::Duplicate,
            Self::Conflict => PortError::Conflict,
            Self::Unavailable => PortError::unavailable("connection reset (injected)"),
            Self::Unexpected => PortError::unexpected("corrupt row (injected)"),
        }
    }

    /// The use-case error this failure must surface as (after retries, for a conflict).
    pub fn expected(self) -> ErrKind {
        match self {
            Self::NotFound => ErrKind::NotFound,
            Self::InvalidCursor => ErrKind::InvalidCursor,
            // An id collision is a bug or corruption, not the client's doing.
            Self::Duplicate | Self::Unexpected => ErrKind::Unexpected,
            Self::Conflict => ErrKind::Busy,
            Self::Unavailable => ErrKind::Unavailable,
        }
    }
}

/// The cases of [`AppError`], comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrKind {
    Invalid,
    NotFound,
    InvalidCursor,
    NoUserMessage,
    IdempotencyKeyReused,
    Busy,
    Unavailable,
    Unexpected,
}

/// Which case `e` is.
pub fn kind(e: &AppError) -> ErrKind {
    match e {
        AppError::Invalid(_) => ErrKind::Invalid,
        AppError::NotFound => ErrKind::NotFound,
        AppError::InvalidCursor => ErrKind::InvalidCursor,
        AppError::NoUserMessage => ErrKind::NoUserMessage,
        AppError::IdempotencyKeyReused => ErrKind::IdempotencyKeyReused,
        AppError::Busy => ErrKind::Busy,
        AppError::Unavailable(_) => ErrKind::Unavailable,
        AppError::Unexpected(_) => ErrKind::Unexpected,
    }
}

/// The error case of `r`, panicking with `what` when it succeeded.
pub fn err_kind<T: std::fmt::Debug>(r: Result<T, AppError>, what: &str) -> ErrKind {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => kind(&e),
    }
}

// ---------------------------------------------------------------- harness

/// How a scripted unit of work must end.
#[derive(Debug, Clone, Copy)]
pub enum End {
    /// Committed exactly once (successfully), never rolled back.
    Commit,
    /// `commit` called exactly once and failing; never rolled back.
    CommitFails(Fail),
    /// Rolled back exactly once, never committed.
    Rollback,
    /// `rollback` called exactly once and failing; never committed.
    RollbackFails(Fail),
}

/// Records every transaction outcome the app reports.
#[derive(Default)]
pub struct RecordingObserver(Mutex<Vec<(Mode, TxOutcome)>>);

impl TxObserver for RecordingObserver {
    fn observe(&self, mode: Mode, outcome: TxOutcome) {
        self.0.lock().unwrap().push((mode, outcome));
    }
}

struct Planned {
    mode: Mode,
    uow: Result<MockUnitOfWork, Fail>,
}

/// Assembles an [`App`] on mocks and remembers what happened to them.
pub struct Harness {
    /// The context the factory expects in every `begin` (and tests pass in).
    pub ctx: RequestContext,
    /// The app's configuration (default: 3 immediate attempts, 1 s title timeout).
    pub config: AppConfig,
    /// The clock (default: always [`now`]).
    pub clock: MockClock,
    /// The id source (default: counters, see [`minted_thread_id`]/[`minted_message_id`]).
    pub ids: MockIdSource,
    titles: Arc<dyn TitleGenerator>,
    plan: Vec<Planned>,
    begun: Arc<Mutex<Vec<Mode>>>,
    open: Arc<AtomicUsize>,
    observer: Arc<RecordingObserver>,
    title_calls: Arc<Mutex<Vec<String>>>,
}

impl Harness {
    /// A harness with default ports and no unit of work planned yet. The
    /// title generator must not be called unless a test installs one.
    pub fn new() -> Self {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(now());
        let mut ids = MockIdSource::new();
        let threads = AtomicU32::new(0);
        ids.expect_thread_id()
            .returning(move |_| minted_thread_id(threads.fetch_add(1, Ordering::SeqCst) + 1));
        let messages = AtomicU32::new(0);
        ids.expect_message_id()
            .returning(move |_| minted_message_id(messages.fetch_add(1, Ordering::SeqCst) + 1));
        let mut titles = MockTitleGenerator::new();
        titles.expect_generate().never();
        Self {
            ctx: ctx(),
            config: AppConfig {
                retry: RetryPolicy::immediate(3),
                title_timeout: Duration::from_secs(1),
            },
            clock,
            ids,
            titles: Arc::new(titles),
            plan: Vec::new(),
            begun: Arc::default(),
            open: Arc::default(),
            observer: Arc::default(),
            title_calls: Arc::default(),
        }
    }

    /// The same with `n` attempts per unit of work.
    pub fn with_attempts(n: u32) -> Self {
        let mut h = Self::new();
        h.config.retry = RetryPolicy::immediate(n);
        h
    }

    /// Plans the next unit of work: begun in `mode`, its calls set up by
    /// `script`, ended as `end` says.
    pub fn uow(&mut self, mode: Mode, end: End, script: impl FnOnce(&mut MockUnitOfWork)) {
        let mut u = MockUnitOfWork::new();
        u.expect_mode().return_const(mode);
        script(&mut u);
        let (open_c, open_r) = (self.open.clone(), self.open.clone());
        let closed = move |open: &AtomicUsize| {
            open.fetch_sub(1, Ordering::SeqCst);
        };
        match end {
            End::Commit => {
                u.expect_commit().times(1).returning(move || {
                    closed(&open_c);
                    Ok(())
                });
                u.expect_rollback().never();
            }
            End::CommitFails(f) => {
                u.expect_commit().times(1).returning(move || {
                    closed(&open_c);
                    Err(f.err())
                });
                u.expect_rollback().never();
            }
            End::Rollback => {
                u.expect_commit().never();
                u.expect_rollback().times(1).returning(move || {
                    closed(&open_r);
                    Ok(())
                });
            }
            End::RollbackFails(f) => {
                u.expect_commit().never();
                u.expect_rollback().times(1).returning(move || {
                    closed(&open_r);
                    Err(f.err())
                });
            }
        }
        self.plan.push(Planned { mode, uow: Ok(u) });
    }

    /// Plans a `begin` in `mode` that fails with `fail`.
    pub fn begin_fails(&mut self, mode: Mode, fail: Fail) {
        self.plan.push(Planned {
            mode,
            uow: Err(fail),
        });
    }

    /// Makes the id source refuse to mint anything.
    pub fn no_ids(&mut self) {
        self.ids = MockIdSource::new();
        self.ids.expect_thread_id().never();
        self.ids.expect_message_id().never();
    }

    /// Installs a mocked title generator answering with `answer`. Every call
    /// records its text and asserts that no unit of work is open.
    pub fn titles(&mut self, answer: impl Fn(&str) -> Result<Title, TitleError> + Send + 'static) {
        let (open, calls) = (self.open.clone(), self.title_calls.clone());
        let mut g = MockTitleGenerator::new();
        g.expect_generate().returning(move |text| {
            assert_eq!(
                open.load(Ordering::SeqCst),
                0,
                "the title generator was called while a unit of work was open"
            );
            calls.lock().unwrap().push(text.to_owned());
            answer(text)
        });
        self.titles = Arc::new(g);
    }

    /// Installs a hand-written title generator.
    pub fn title_generator(&mut self, g: Arc<dyn TitleGenerator>) {
        self.titles = g;
    }

    /// The count of open units of work, shared with the mocks.
    pub fn open_counter(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }

    /// The app, on a factory that hands out the planned units of work in
    /// order (and fails the test when begun more or fewer times).
    pub fn app(&mut self) -> App {
        let plan: VecDeque<Planned> = std::mem::take(&mut self.plan).into();
        let planned = plan.len();
        let plan = Mutex::new(plan);
        let (expected_ctx, begun, open) = (self.ctx.clone(), self.begun.clone(), self.open.clone());
        let mut factory = MockUnitOfWorkFactory::new();
        factory
            .expect_begin()
            .times(planned)
            .returning(move |ctx, mode| {
                let n = begun.lock().unwrap().len() + 1;
                let next = plan
                    .lock()
                    .unwrap()
                    .pop_front()
                    .expect("more units of work begun than planned");
                assert_eq!(
                    ctx, &expected_ctx,
                    "unit of work #{n} begun for another request context"
                );
                assert_eq!(mode, next.mode, "unit of work #{n} begun in the wrong mode");
                begun.lock().unwrap().push(mode);
                match next.uow {
                    Ok(u) => {
                        open.fetch_add(1, Ordering::SeqCst);
                        Ok(Box::new(u))
                    }
                    Err(f) => Err(f.err()),
                }
            });
        let deps = Deps {
            uow: Arc::new(factory),
            clock: Arc::new(std::mem::take(&mut self.clock)),
            ids: Arc::new(std::mem::take(&mut self.ids)),
            titles: self.titles.clone(),
            observer: self.observer.clone(),
        };
        App::new(deps, self.config.clone())
    }

    /// The modes of every `begin`, in order (failed ones included).
    pub fn begun(&self) -> Vec<Mode> {
        self.begun.lock().unwrap().clone()
    }

    /// What the observer was told, in order.
    pub fn observed(&self) -> Vec<(Mode, TxOutcome)> {
        self.observer.0.lock().unwrap().clone()
    }

    /// The texts the title generator was asked about, in order.
    pub fn title_calls(&self) -> Vec<String> {
        self.title_calls.lock().unwrap().clone()
    }

    /// Asserts every unit of work begun has been committed or rolled back.
    pub fn assert_all_ended(&self, what: &str) {
        assert_eq!(
            self.open.load(Ordering::SeqCst),
            0,
            "{what}: a unit of work was left open"
        );
    }
}

// ---------------------------------------------------------------- driver

/// One repository call a use case makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    LockThreadSequence,
    InsertThread,
    GetThread,
    LockThread,
    UpdateThread,
    AdjustCount(i64),
    ArchiveThread,
    ListThreads,
    InsertMessages,
    AppendMessage,
    GetMessage,
    LockMessage,
    UpdateMessage,
    ArchiveMessage,
    ListMessages,
    FindIdempotency,
    InsertIdempotency,
}

impl Step {
    /// Whether the call takes a list cursor (and so may fail with `InvalidCursor`).
    pub fn takes_a_cursor(self) -> bool {
        matches!(self, Self::ListThreads | Self::ListMessages)
    }

    /// Expects this call once, in `seq`, answering a plausible value or `fail`.
    pub fn expect(self, u: &mut MockUnitOfWork, seq: &mut Sequence, fail: Option<Fail>) {
        let r = move || -> Result<(), PortError> { fail.map_or(Ok(()), |f| Err(f.err())) };
        match self {
            Self::LockThreadSequence => {
                u.expect_lock_thread_sequence()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move || r().map(|()| None));
            }
            Self::InsertThread => {
                u.expect_lock_thread_sequence().returning(|| Ok(None));
                u.expect_insert_thread()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_| r());
            }
            Self::GetThread => {
                u.expect_get_thread()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_| r().map(|()| thread(1)));
            }
            Self::LockThread => {
                u.expect_lock_thread()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_| r().map(|()| thread(1)));
            }
            Self::UpdateThread => {
                u.expect_update_thread()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_| r());
            }
            Self::AdjustCount(delta) => {
                u.expect_adjust_message_count()
                    .withf(move |_, d, _| *d == delta)
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_, _, _| r());
            }
            Self::ArchiveThread => {
                u.expect_archive_thread()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_, _| r());
            }
            Self::ListThreads => {
                u.expect_list_threads()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_| r().map(|()| page(vec![thread(1)], false)));
            }
            Self::InsertMessages => {
                u.expect_insert_messages()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_| r());
            }
            Self::AppendMessage => {
                u.expect_append_message()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_| r().map(|()| Appended::Done));
            }
            Self::GetMessage => {
                u.expect_get_message()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_, _| r().map(|()| message(1, 1, Role::User, "hi")));
            }
            Self::LockMessage => {
                u.expect_lock_message()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_, _| r().map(|()| message(1, 1, Role::User, "hi")));
            }
            Self::UpdateMessage => {
                u.expect_update_message()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_| r());
            }
            Self::ArchiveMessage => {
                u.expect_archive_message()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_, _, _| r());
            }
            Self::ListMessages => {
                u.expect_list_messages()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_, _| {
                        r().map(|()| page(vec![message(1, 1, Role::User, "hi")], false))
                    });
            }
            Self::FindIdempotency => {
                u.expect_find_idempotency()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_, _| r().map(|()| None));
            }
            Self::InsertIdempotency => {
                u.expect_insert_idempotency()
                    .times(1)
                    .in_sequence(seq)
                    .returning(move |_, _| r());
            }
        }
    }
}

/// The use cases that run in exactly one unit of work (all but auto-rename,
/// whose two units of work are tested in `rename`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseCase {
    CreateThread,
    CreateThreadIdempotent,
    GetThread,
    ListThreads,
    ModifyThread,
    DeleteThread,
    CreateMessage,
    CreateMessageIdempotent,
    GetMessage,
    ListMessages,
    ModifyMessage,
    DeleteMessage,
}

/// Every [`UseCase`].
pub const ALL: [UseCase; 12] = [
    UseCase::CreateThread,
    UseCase::CreateThreadIdempotent,
    UseCase::GetThread,
    UseCase::ListThreads,
    UseCase::ModifyThread,
    UseCase::DeleteThread,
    UseCase::CreateMessage,
    UseCase::CreateMessageIdempotent,
    UseCase::GetMessage,
    UseCase::ListMessages,
    UseCase::ModifyMessage,
    UseCase::DeleteMessage,
];

impl UseCase {
    /// The mode its unit of work must be begun in.
    pub fn mode(self) -> Mode {
        match self {
            Self::GetThread | Self::ListThreads | Self::GetMessage | Self::ListMessages => {
                Mode::SingleRead
            }
            _ => Mode::ReadWrite,
        }
    }

    /// The repository calls of its success path, in order.
    pub fn steps(self) -> Vec<Step> {
        use Step::*;
        match self {
            Self::CreateThread => vec![LockThreadSequence, InsertThread, InsertMessages],
            Self::CreateThreadIdempotent => vec![
                FindIdempotency,
                LockThreadSequence,
                InsertThread,
                InsertMessages,
                InsertIdempotency,
            ],
            Self::GetThread => vec![GetThread],
            Self::ListThreads => vec![ListThreads],
            Self::ModifyThread => vec![LockThread, UpdateThread],
            Self::DeleteThread => vec![ArchiveThread],
            Self::CreateMessage => vec![AppendMessage],
            Self::CreateMessageIdempotent => {
                vec![FindIdempotency, AppendMessage, InsertIdempotency]
            }
            Self::GetMessage => vec![GetMessage],
            Self::ListMessages => vec![ListMessages],
            Self::ModifyMessage => vec![LockMessage, UpdateMessage],
            Self::DeleteMessage => vec![LockThread, ArchiveMessage, AdjustCount(-1)],
        }
    }

    /// Scripts one attempt: every step succeeds, or the steps before
    /// `fail_at.0` succeed, that one fails and no later one may be called.
    pub fn script(self, u: &mut MockUnitOfWork, fail_at: Option<(usize, Fail)>) {
        let mut seq = Sequence::new();
        for (i, step) in self.steps().into_iter().enumerate() {
            match fail_at {
                Some((at, f)) if at == i => {
                    step.expect(u, &mut seq, Some(f));
                    return;
                }
                _ => step.expect(u, &mut seq, None),
            }
        }
    }

    /// Plans one attempt of this use case on `h`: its unit of work, scripted
    /// by [`UseCase::script`] and ended as `end` says.
    pub fn plan(self, h: &mut Harness, fail_at: Option<(usize, Fail)>, end: End) {
        h.uow(self.mode(), end, |u| self.script(u, fail_at));
    }

    /// Runs it with fixed arguments, keeping only the error.
    pub async fn run(self, app: &App, ctx: &RequestContext) -> Result<(), AppError> {
        let (t, m) = (thread_id(1), message_id(1));
        let key = || idem("key-1", serde_json::json!({"n": 1}));
        let msg = || new_message(Role::User, "hello");
        match self {
            Self::CreateThread => app
                .create_thread(ctx, create_cmd(), render_thread())
                .await
                .map(drop),
            Self::CreateThreadIdempotent => app
                .create_thread_idempotent(ctx, create_cmd(), key(), render_thread())
                .await
                .map(drop),
            Self::GetThread => app.get_thread(ctx, t).await.map(drop),
            Self::ListThreads => app.list_threads(ctx, ListParams::default()).await.map(drop),
            Self::ModifyThread => app
                .modify_thread(
                    ctx,
                    t,
                    ThreadPatch {
                        metadata: Some(metadata_patch(&[("k", Some("v"))])),
                        ..ThreadPatch::default()
                    },
                )
                .await
                .map(drop),
            Self::DeleteThread => app.delete_thread(ctx, t).await,
            Self::CreateMessage => app
                .create_message(ctx, t, msg(), render_message())
                .await
                .map(drop),
            Self::CreateMessageIdempotent => app
                .create_message_idempotent(ctx, t, msg(), key(), render_message())
                .await
                .map(drop),
            Self::GetMessage => app.get_message(ctx, t, m).await.map(drop),
            Self::ListMessages => app
                .list_messages(ctx, t, ListParams::default())
                .await
                .map(drop),
            Self::ModifyMessage => app
                .modify_message(
                    ctx,
                    t,
                    m,
                    MessagePatch {
                        metadata: metadata_patch(&[("k", Some("v"))]),
                    },
                )
                .await
                .map(drop),
            Self::DeleteMessage => app.delete_message(ctx, t, m).await,
        }
    }
}
