//! E-mail address → Slack user ID. Filled from `users.list` at start-up and on a timer, so a
//! burst to many people needs no per-person lookups; a miss falls back to
//! `users.lookupByEmail`, and an address Slack does not know is remembered briefly.
//!
//! Each full sweep builds a [`Snapshot`] and swaps it in whole: every member's lower-cased
//! e-mail and packed user ID as one record in 64 KiB byte chunks, and an index of `u32`
//! record places sorted by e-mail for binary search: e-mail length + 13 bytes a member (a
//! 30-character address: 43). While a sweep runs, the previous snapshot serves and the next
//! grows in small steps beside it. A sweep that fails keeps the previous snapshot. Addresses
//! looked up one by one are kept beside it, in a small cache with a lifetime.

use super::{SlackApi, SlackError, UsersPage};
use crate::retry::Retry;
use crate::telemetry::{LookupLabels, Metrics};
use moka::future::Cache;
use slack_morphism::prelude::SlackUserId;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// `users.list` page size: Slack's maximum.
const PAGE_SIZE: u16 = 1000;
/// More than any workspace has; bounds memory if Slack misbehaves (a sweep listing more
/// members than this fails, and the previous snapshot stays).
const MAX_USERS: usize = 2_000_000;
/// Addresses learned one by one, and addresses Slack does not know, kept at most.
const MAX_LOOKED_UP: u64 = 100_000;
/// Attempts at one page (after a 429's wait, or a transient error) before a sweep gives up.
const PAGE_ATTEMPTS: u32 = 5;

#[derive(Debug)]
pub struct Directory {
    api: Arc<SlackApi>,
    /// The last full sweep.
    swept: RwLock<Snapshot>,
    /// Addresses answered by `users.lookupByEmail` (only those the sweep did not have).
    learned: Cache<String, SlackUserId>,
    unknown: Cache<String, ()>,
    /// How long a sweep's or a lookup's answer is trusted.
    entry_ttl: Duration,
    metrics: Metrics,
}

/// Why a lookup found nobody, shared between coalesced callers.
#[derive(Debug, Clone)]
enum Miss {
    NotFound,
    Failed(SlackError),
}

impl Directory {
    /// `entry_ttl` bounds how long an address is trusted without being seen again in a sweep
    /// or a lookup: if sweeps keep failing, an address reassigned in Slack must not keep
    /// going to its previous owner, so a snapshot older than that is no longer used.
    pub fn new(
        api: Arc<SlackApi>,
        negative_ttl: Duration,
        entry_ttl: Duration,
        metrics: Metrics,
    ) -> Self {
        for result in ["hit", "miss", "negative_hit"] {
            let _ = metrics
                .directory_lookups
                .get_or_create(&LookupLabels { result });
        }
        for result in ["ok", "failed"] {
            let labels = crate::telemetry::SweepLabels { result };
            let _ = metrics.directory_sweeps.get_or_create(&labels);
        }
        Directory {
            api,
            swept: RwLock::new(Snapshot::empty()),
            learned: Cache::builder()
                .max_capacity(MAX_LOOKED_UP)
                .time_to_live(entry_ttl)
                .build(),
            unknown: Cache::builder()
                .max_capacity(MAX_LOOKED_UP)
                .time_to_live(negative_ttl)
                .build(),
            entry_ttl,
            metrics,
        }
    }

    /// The Slack user with this address when it is known without asking Slack.
    pub async fn cached(&self, email: &str) -> Option<SlackUserId> {
        self.known(&email.to_lowercase()).await
    }

    /// The last sweep's answer, else a lookup learned since: `key` is a lowercased address.
    async fn known(&self, key: &str) -> Option<SlackUserId> {
        match self.swept_id(key) {
            Some(id) => Some(id),
            None => self.learned.get(key).await,
        }
    }

    /// The Slack user with this address; `Ok(None)` when Slack has nobody active with it.
    /// Concurrent lookups of one address share one Slack call.
    pub async fn resolve(&self, email: &str) -> Result<Option<SlackUserId>, SlackError> {
        let key = email.to_lowercase();
        if let Some(id) = self.known(&key).await {
            self.count("hit");
            return Ok(Some(id));
        }
        if self.unknown.contains_key(&key) {
            self.count("negative_hit");
            return Ok(None);
        }
        self.count("miss");
        let api = &self.api;
        let result = self
            .learned
            .try_get_with(key.clone(), async {
                match api.lookup_by_email(&key).await {
                    Ok(Some(id)) => Ok(id),
                    Ok(None) => Err(Miss::NotFound),
                    Err(e) => Err(Miss::Failed(e)),
                }
            })
            .await;
        match result {
            Ok(id) => {
                self.publish_size();
                Ok(Some(id))
            }
            Err(miss) => match miss.as_ref() {
                Miss::NotFound => {
                    self.unknown.insert(key, ()).await;
                    Ok(None)
                }
                Miss::Failed(e) => Err(e.clone()),
            },
        }
    }

    /// The last sweep's answer, while that sweep is recent enough to be trusted.
    fn swept_id(&self, key: &str) -> Option<SlackUserId> {
        let swept = self.read();
        if swept.is_fresh(self.entry_ttl) {
            swept.get(key)
        } else {
            None
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.swept.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.swept.write().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .directory_lookups
            .get_or_create(&LookupLabels { result })
            .inc();
    }

    fn count_sweep(&self, result: &'static str) {
        let labels = crate::telemetry::SweepLabels { result };
        self.metrics.directory_sweeps.get_or_create(&labels).inc();
    }

    /// Members of a trusted snapshot plus addresses learned one by one.
    fn size(&self) -> u64 {
        let swept = {
            let swept = self.read();
            if swept.is_fresh(self.entry_ttl) {
                swept.len()
            } else {
                0
            }
        };
        u64::try_from(swept).unwrap_or(u64::MAX) + self.learned.entry_count()
    }

    fn publish_size(&self) {
        self.metrics
            .directory_size
            .set(i64::try_from(self.size()).unwrap_or(i64::MAX));
    }

    /// Known users: the last sweep's (while trusted) and those looked up since.
    pub async fn known_users(&self) -> u64 {
        self.learned.run_pending_tasks().await;
        self.size()
    }

    /// One sweep of `users.list`, page by page, into a new snapshot that replaces the
    /// previous one once every page has been read. Returns how many active users it holds.
    pub async fn refresh(&self) -> Result<usize, SlackError> {
        // Trusted from when the sweep began: its first page is that old.
        let taken = Instant::now();
        let mut builder = Builder::sized_like(&self.read());
        // Deleted users and bots, by a hash of their address: only to drop what was learned
        // of them, so 8 bytes each for the sweep's length (a collision costs a lookup).
        let hasher = RandomState::new();
        let mut gone: Vec<u64> = Vec::new();
        let mut cursor = None;
        loop {
            let page: UsersPage = self.page_with_retries(cursor.take()).await?;
            let listed = builder.members() + gone.len() + page.active.len() + page.gone.len();
            if listed > MAX_USERS {
                return Err(SlackError::Protocol {
                    method: "users.list",
                    detail: format!("more than {MAX_USERS} members listed"),
                });
            }
            for (email, id) in &page.active {
                builder.push(email, &id.0);
            }
            gone.extend(page.gone.iter().map(|e| hasher.hash_one(e.as_str())));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        if builder.skipped > 0 {
            tracing::debug!(
                skipped = builder.skipped,
                "addresses longer than 255 bytes are looked up one by one"
            );
        }
        let snapshot = builder.finish(taken);
        let members = snapshot.len();
        gone.sort_unstable();
        let was_gone = |key: &str| gone.binary_search(&hasher.hash_one(key)).is_ok();
        self.install(snapshot, was_gone).await;
        Ok(members)
    }

    /// Swaps `snapshot` in, and drops what it supersedes: learned and unknown addresses it
    /// has, and learned addresses the sweep saw deleted (`was_gone`).
    async fn install(&self, snapshot: Snapshot, was_gone: impl Fn(&str) -> bool) {
        let previous = std::mem::replace(&mut *self.write(), snapshot);
        drop(previous);
        let (learned, unknown): (Vec<_>, Vec<_>) = {
            let swept = self.read();
            let learned = self
                .learned
                .iter()
                .filter(|(key, _)| swept.get(key).is_some() || was_gone(key))
                .map(|(key, _)| key)
                .collect();
            let unknown = self
                .unknown
                .iter()
                .filter(|(key, _)| swept.get(key).is_some())
                .map(|(key, _)| key)
                .collect();
            (learned, unknown)
        };
        for key in learned {
            self.learned.invalidate(key.as_str()).await;
        }
        for key in unknown {
            self.unknown.invalidate(key.as_str()).await;
        }
        self.learned.run_pending_tasks().await;
        self.publish_size();
    }

    /// After a failed sweep: a snapshot no longer trusted is dropped, freeing its memory.
    fn forget_if_stale(&self) {
        {
            let mut swept = self.write();
            if !swept.is_fresh(self.entry_ttl) && swept.len() > 0 {
                *swept = Snapshot::empty();
            }
        }
        self.publish_size();
    }

    async fn page_with_retries(&self, cursor: Option<String>) -> Result<UsersPage, SlackError> {
        Retry::new(Duration::from_secs(1), Duration::from_secs(30))
            .attempts(PAGE_ATTEMPTS)
            .run(SlackError::verdict, || {
                self.api.users_list_page(cursor.clone(), PAGE_SIZE)
            })
            .await
    }

    /// Sweeps now and then every `every`, until `shutdown`.
    pub fn spawn_refresher(
        self: Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let metrics = &self.metrics;
        metrics
            .directory_sweep_interval
            .set(i64::try_from(every.as_secs()).unwrap_or(i64::MAX));
        // Counted from the start, so a bridge whose sweeps never succeed is noticed, and one
        // just started is not.
        metrics
            .directory_last_sweep
            .set(crate::telemetry::unix_now());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let started = std::time::Instant::now();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    result = self.refresh() => self.after_sweep(result, started),
                }
            }
        })
    }

    fn after_sweep(&self, result: Result<usize, SlackError>, started: Instant) {
        match result {
            Ok(users) => {
                self.count_sweep("ok");
                self.metrics
                    .directory_last_sweep
                    .set(crate::telemetry::unix_now());
                tracing::info!(
                    users,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "directory refreshed from users.list"
                )
            }
            Err(e) => {
                self.count_sweep("failed");
                self.forget_if_stale();
                match e.remedy() {
                    Some(remedy) => {
                        tracing::error!(error = %e, "directory refresh failed: {remedy}")
                    }
                    None => {
                        tracing::warn!(error = %e, "directory refresh failed; users are looked up one by one until the next refresh")
                    }
                }
            }
        }
    }
}

/// Marks a packed ID that is an index into [`Snapshot::odd_ids`]: no base-37 value of up to
/// [`PACKED_ID_LEN`] digits reaches it (37^12 < 2^63).
const ODD_ID: u64 = 1 << 63;
/// The longest user ID that packs into a `u64`.
const PACKED_ID_LEN: usize = 12;
/// A record's bytes besides its e-mail: the e-mail's length, the packed ID.
const RECORD_OVERHEAD: usize = 1 + 8;
/// The largest record: an e-mail of 255 bytes.
const MAX_RECORD: usize = RECORD_OVERHEAD + u8::MAX as usize;
/// Records are kept in chunks of 64 KiB, none spanning two, so a sweep allocates in small
/// steps: no buffer doubles its way up, none is copied. A record's place is a `u32`: its
/// chunk in the high 16 bits, its offset in the chunk in the low 16.
const CHUNK_BITS: u32 = 16;
const CHUNK: usize = 1 << CHUNK_BITS;
// A sweep at its largest, with the longest addresses, still numbers its chunks in 16 bits.
const _: () = assert!(MAX_USERS.div_ceil(CHUNK / MAX_RECORD) < 1 << (32 - CHUNK_BITS));

/// A Slack user ID (`[0-9A-Z]`, up to 12 characters: Slack's are 9 to 11, starting with U or
/// W) as a base-37 number, its first character the lowest digit; `None` for any other.
fn pack_id(id: &str) -> Option<u64> {
    if id.is_empty() || id.len() > PACKED_ID_LEN {
        return None;
    }
    id.bytes().rev().try_fold(0u64, |packed, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0' + 1,
            b'A'..=b'Z' => b - b'A' + 11,
            _ => return None,
        };
        Some(packed * 37 + u64::from(digit))
    })
}

fn unpack_id(mut packed: u64) -> String {
    let mut id = String::with_capacity(PACKED_ID_LEN);
    while packed > 0 {
        let digit = (packed % 37) as u8;
        id.push(char::from(match digit {
            1..=10 => b'0' + digit - 1,
            _ => b'A' + digit - 11,
        }));
        packed /= 37;
    }
    id
}

/// The directory as one full sweep saw it: immutable, replaced whole by the next sweep.
struct Snapshot {
    /// When its sweep began.
    taken: Instant,
    /// One record per active member, in the order listed: the e-mail's length (a byte), the
    /// lower-cased e-mail, the packed user ID (8 bytes, little-endian); in chunks.
    records: Box<[Box<[u8]>]>,
    /// Where each address's record is, sorted by address; one per address.
    index: Box<[u32]>,
    /// User IDs that do not pack, by `packed & !ODD_ID`.
    odd_ids: Box<[Box<str>]>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("members", &self.len())
            .field("heap_bytes", &self.heap_bytes())
            .finish()
    }
}

impl Snapshot {
    fn empty() -> Self {
        Builder::default().finish(Instant::now())
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn is_fresh(&self, ttl: Duration) -> bool {
        self.taken.elapsed() < ttl
    }

    /// `email` must be lower-cased.
    fn get(&self, email: &str) -> Option<SlackUserId> {
        let records = &self.records;
        let found = self
            .index
            .binary_search_by(|&at| email_at(record(records, at)).cmp(email.as_bytes()))
            .ok()?;
        let packed = id_at(record(records, self.index[found]))?;
        if packed & ODD_ID == 0 {
            return Some(SlackUserId(unpack_id(packed)));
        }
        let odd = usize::try_from(packed & !ODD_ID).ok()?;
        self.odd_ids.get(odd).map(|id| SlackUserId(id.to_string()))
    }

    /// What it holds on the heap, from its allocations' sizes.
    fn heap_bytes(&self) -> usize {
        self.records.iter().map(|chunk| chunk.len()).sum::<usize>()
            + std::mem::size_of_val(&*self.records)
            + std::mem::size_of_val(&*self.index)
            + std::mem::size_of_val(&*self.odd_ids)
            + self.odd_ids.iter().map(|id| id.len()).sum::<usize>()
    }
}

/// The record at `at` and whatever follows it in its chunk.
fn record<C: AsRef<[u8]>>(chunks: &[C], at: u32) -> &[u8] {
    let (chunk, offset) = ((at >> CHUNK_BITS) as usize, (at as usize) & (CHUNK - 1));
    chunks
        .get(chunk)
        .and_then(|c| c.as_ref().get(offset..))
        .unwrap_or_default()
}

fn email_at(record: &[u8]) -> &[u8] {
    let len = usize::from(record.first().copied().unwrap_or(0));
    record.get(1..1 + len).unwrap_or_default()
}

fn id_at(record: &[u8]) -> Option<u64> {
    let start = 1 + usize::from(*record.first()?);
    let bytes: [u8; 8] = record.get(start..start + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// A snapshot being filled by a sweep.
#[derive(Default)]
struct Builder {
    chunks: Vec<Vec<u8>>,
    index: Vec<u32>,
    odd_ids: Vec<Box<str>>,
    /// Addresses too long for a record (over 255 bytes, which no valid address is): left
    /// out, so they are looked up one by one.
    skipped: usize,
}

impl Builder {
    /// Room in the index for about as many members as `previous` holds, so a sweep of an
    /// org whose size has not changed much does not double its way up.
    fn sized_like(previous: &Snapshot) -> Self {
        let room = |n: usize| n + n / 8;
        Builder {
            chunks: Vec::with_capacity(room(previous.records.len())),
            index: Vec::with_capacity(room(previous.index.len())),
            ..Builder::default()
        }
    }

    fn members(&self) -> usize {
        self.index.len()
    }

    /// One active member: `email` lower-cased. A later record of the same address wins.
    fn push(&mut self, email: &str, id: &str) {
        let Ok(len) = u8::try_from(email.len()) else {
            self.skipped += 1;
            return;
        };
        let packed = pack_id(id).unwrap_or_else(|| {
            self.odd_ids.push(id.into());
            ODD_ID | (self.odd_ids.len() as u64 - 1)
        });
        let size = RECORD_OVERHEAD + email.len();
        if self.chunks.last().is_none_or(|c| c.len() + size > CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let number = self.chunks.len() - 1;
        let Some(chunk) = self.chunks.last_mut() else {
            return;
        };
        let Ok(at) = u32::try_from(number << CHUNK_BITS | chunk.len()) else {
            self.skipped += 1;
            return;
        };
        chunk.push(len);
        chunk.extend_from_slice(email.as_bytes());
        chunk.extend_from_slice(&packed.to_le_bytes());
        self.index.push(at);
    }

    /// Sorts the index by address (in place), keeps the last record of each, and gives back
    /// spare capacity.
    fn finish(self, taken: Instant) -> Snapshot {
        let Builder {
            chunks,
            mut index,
            odd_ids,
            ..
        } = self;
        let email = |at: u32| email_at(record(&chunks, at));
        // Later records first among equal addresses, so `dedup` keeps the last one listed.
        index.sort_unstable_by(|&a, &b| email(a).cmp(email(b)).then(b.cmp(&a)));
        index.dedup_by(|later, kept| email(*later) == email(*kept));
        Snapshot {
            taken,
            records: chunks.into_iter().map(Vec::into_boxed_slice).collect(),
            index: index.into_boxed_slice(),
            odd_ids: odd_ids.into_boxed_slice(),
        }
    }

    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum::<usize>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.index.capacity() * std::mem::size_of::<u32>()
            + self.odd_ids.capacity() * std::mem::size_of::<Box<str>>()
            + self.odd_ids.iter().map(|id| id.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plausible corporate address, 37 bytes.
    fn email(i: usize) -> String {
        format!("firstname{i:06}.lastname@corp.example")
    }

    /// A Slack-shaped user ID: U and 10 characters.
    fn user_id(i: usize) -> String {
        format!("U{:010X}", i * 7919)
    }

    /// A sweep of `members`: what its builder held at the end (its largest), and the snapshot.
    fn build(members: usize, previous: &Snapshot) -> (usize, Snapshot) {
        let mut builder = Builder::sized_like(previous);
        for i in 0..members {
            builder.push(&email(i), &user_id(i));
        }
        (builder.heap_bytes(), builder.finish(Instant::now()))
    }

    #[test]
    fn ids_pack_into_a_u64_and_back() {
        for id in [
            "U0123ABCD",
            "W012A3CDE",
            "U0G9QF9C6",
            "USLACKBOT",
            "ZZZZZZZZZZZZ",
            "0",
            "U",
        ] {
            let packed = pack_id(id).expect(id);
            assert_eq!(packed & ODD_ID, 0, "{id}");
            assert_eq!(unpack_id(packed), id);
        }
        for id in ["", "u0123abcd", "U0123ABCD-1", "UABCDEFGHIJKL", "Ü1", "U 1"] {
            assert_eq!(pack_id(id), None, "{id:?}");
        }
    }

    #[test]
    fn any_id_and_every_address_come_back_exactly() {
        let mut builder = Builder::default();
        let members = [
            ("a@b.co", "U01"),
            ("a@b.c", "W0123456789A"),
            ("odd@corp.example", "u-lower-case-and-long-0123456789"),
            ("", "UEMPTY"),
            ("zz@corp.example", "USLACKBOT"),
        ];
        for (email, id) in members {
            builder.push(email, id);
        }
        let longest = format!("{}@corp.example", "x".repeat(255 - "@corp.example".len()));
        builder.push(&longest, "ULONGEST");
        builder.push(&format!("x{longest}"), "UTOOLONG");
        assert_eq!(builder.skipped, 1);
        let snapshot = builder.finish(Instant::now());
        assert_eq!(snapshot.len(), members.len() + 1);
        assert_eq!(
            snapshot.get(&longest).map(|u| u.0).as_deref(),
            Some("ULONGEST")
        );
        assert_eq!(snapshot.get(&format!("x{longest}")), None);
        for (email, id) in members {
            assert_eq!(
                snapshot.get(email).map(|u| u.0).as_deref(),
                Some(id),
                "{email}"
            );
        }
        for absent in ["a@b", "a@b.com", "b@b.co", "zz@corp.example.", "A@B.CO"] {
            assert_eq!(snapshot.get(absent), None, "{absent}");
        }
    }

    #[test]
    fn the_member_listed_last_wins_an_address() {
        let mut builder = Builder::default();
        for (email, id) in [
            ("x@c.example", "U1"),
            ("y@c.example", "U2"),
            ("x@c.example", "U3"),
        ] {
            builder.push(email, id);
        }
        builder.push("y@c.example", "odd id");
        let snapshot = builder.finish(Instant::now());
        assert_eq!(snapshot.len(), 2);
        assert_eq!(
            snapshot.get("x@c.example").map(|u| u.0).as_deref(),
            Some("U3")
        );
        assert_eq!(
            snapshot.get("y@c.example").map(|u| u.0).as_deref(),
            Some("odd id")
        );
    }

    /// Issue #15's budget: at most 100 bytes a member once swept, and at most twice that
    /// while a sweep runs (the previous snapshot still serving, the next one being filled),
    /// counted from the allocations' capacities.
    #[test]
    fn a_hundred_thousand_members_cost_under_100_bytes_each() {
        const MEMBERS: usize = 100_000;
        // The first sweep: nothing to size the buffers by, so they double their way up.
        let (first_peak, first) = build(MEMBERS, &Snapshot::empty());
        // The next: sized like the first, which serves until it is replaced.
        let (next_peak, next) = build(MEMBERS, &first);
        let per_member = |bytes: usize| bytes as f64 / MEMBERS as f64;
        let kept = per_member(next.heap_bytes());
        let first_sweep = per_member(first_peak);
        let next_sweep = per_member(first.heap_bytes() + next_peak);
        println!(
            "{MEMBERS} members of 37-byte addresses: {kept:.1} bytes each kept; \
             peak while sweeping {first_sweep:.1} (first sweep), {next_sweep:.1} (later sweeps)"
        );
        assert!(kept <= 100.0, "{kept} bytes a member");
        assert!(first_sweep <= 200.0, "{first_sweep} bytes a member");
        assert!(next_sweep <= 200.0, "{next_sweep} bytes a member");
        assert_eq!(next.len(), MEMBERS);
        for i in (0..MEMBERS).step_by(997) {
            assert_eq!(next.get(&email(i)).map(|u| u.0), Some(user_id(i)));
        }
    }
}
