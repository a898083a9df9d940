//! What the API answers from: the reflector (caught up with this fleetd's own writes), a
//! listing reused across a listing's pages, and the unit-file cache.

use super::*;

/// The page a list call asks for, or fleet's 400.
pub(super) fn page(state: &ApiState, query: &str) -> Result<PageToken, Answer> {
    let tokens = query_values(query, "nextPageToken");
    match tokens.as_slice() {
        [] => Ok(PageToken::first(state.token_limit)),
        [token] => {
            PageToken::decode(token, state.token_limit).map_err(|e| bad_request(e.to_string()))
        }
        _ => Err(bad_request("too many values for page token")),
    }
}

/// The items of `page`, and the token of the next page if there is one.
pub(super) fn slice<T: Clone>(items: &[T], page: PageToken) -> (Vec<T>, String) {
    let limit = usize::from(page.limit);
    let start = (usize::from(page.page) - 1).saturating_mul(limit);
    let end = start.saturating_add(limit).min(items.len());
    let chosen = items.get(start..end).map(<[T]>::to_vec).unwrap_or_default();
    let next = match end < items.len() {
        true => page.next().encode(),
        false => String::new(),
    };
    (chosen, next)
}

/// How long after a listing's first page its next pages are cut from the same snapshot.
pub(super) const PAGES_OF_ONE_SNAPSHOT: Duration = Duration::from_secs(1);

/// What every list call starts with: the page asked for, and the registry's snapshot. The
/// first page reads the registry as it is now; the pages after it, asked for right after,
/// come from the same snapshot without asking the registry again, so a listing read page by
/// page is one consistent view (fleet read each page afresh and could skip or repeat items).
pub(super) async fn listing(
    state: &ApiState,
    query: &str,
) -> Result<(PageToken, Arc<Listed>), Answer> {
    let page = page(state, query)?;
    if page.page > 1 {
        let recent = last_snapshot(state).filter(|(_, at)| at.elapsed() < PAGES_OF_ONE_SNAPSHOT);
        if let Some((listed, _)) = recent {
            return Ok((page, listed));
        }
    }
    Ok((page, snapshot(state).await?))
}

pub(super) fn last_snapshot(state: &ApiState) -> Option<(Arc<Listed>, Instant)> {
    state
        .last_snapshot
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// How long a read waits for the writes this fleetd made (its API, engine and agent) to reach
/// its reflector before it reads the registry itself instead: a read always sees them.
pub(super) const OWN_WRITES: Duration = Duration::from_secs(2);

/// How long a read waits for the reflector to reach the registry's revision, for writes made
/// elsewhere (other machines' fleetds, which arrive within the watch's latency). In an etcd
/// shared with other programs their writes move the revision too and never arrive: then the
/// read is answered after this wait from what the watch has delivered.
pub(super) const OTHER_WRITES: Duration = Duration::from_millis(20);

/// The reflector, once it has caught up with what a read must see; `None` when it cannot be
/// had or lags (the caller reads the registry itself). Asks the registry its revision first,
/// so that an unreachable registry is the error it is for every read, never a stale answer.
pub(super) async fn reflected(state: &ApiState) -> Result<Option<&Reflector>, Answer> {
    let now = state.registry.revision().await?;
    let started = state
        .reflector
        .get_or_try_init(|| state.registry.reflect(Scope::All))
        .await;
    let reflector = match started {
        Ok(reflector) => reflector,
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow the registry; reading it for each request");
            return Ok(None);
        }
    };
    // Re-listing after a broken watch: the registry answers again (it just did), so it is
    // read directly rather than waited for.
    if !reflector.is_following() {
        return Ok(None);
    }
    let written = state.registry.written();
    if !reflector.caught_up(written, OWN_WRITES).await {
        tracing::warn!(
            written,
            reflected = reflector.revision(),
            "the registry watch lags this fleetd's own writes; reading the registry"
        );
        return Ok(None);
    }
    reflector.caught_up(now, OTHER_WRITES).await;
    Ok(Some(reflector))
}

/// `read` of the registry now: in place in the reflector (no snapshot held, no listing built),
/// or of the registry's own snapshot when the reflector cannot serve.
pub(super) async fn read_now<T>(
    state: &ApiState,
    read: impl FnOnce(&Snapshot) -> T,
) -> Result<T, Answer> {
    Ok(match reflected(state).await? {
        Some(reflector) => reflector.read(read),
        None => read(&state.registry.snapshot(&Scope::All).await?),
    })
}

/// The registry now, with its listings: the last listed snapshot if nothing was written
/// since, else the reflector's (or the registry's own when the reflector cannot serve).
pub(super) async fn snapshot(state: &ApiState) -> Result<Arc<Listed>, Answer> {
    let current = match reflected(state).await? {
        Some(reflector) => reflector.snapshot(),
        None => Arc::new(state.registry.snapshot(&Scope::All).await?),
    };
    let listed =
        match last_snapshot(state).filter(|(cached, _)| cached.revision == current.revision) {
            Some((cached, _)) => cached,
            None => Arc::new(Listed::new(current)),
        };
    *state
        .last_snapshot
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((listed.clone(), Instant::now()));
    Ok(listed)
}

/// The unit file of `hash`, from the cache or the registry. Files are immutable, so a cached one
/// is never stale; the cache only has to forget files no unit uses any more: it starts over
/// whenever it holds twice as many as the registry's `units`.
pub(super) async fn unit_file(
    state: &ApiState,
    hash: &UnitHash,
    units: usize,
) -> Result<Option<UnitFile>, RegistryError> {
    if let Some(unit) = state.units.lock().await.get(hash) {
        return Ok(Some(unit.clone()));
    }
    let unit = state.registry.unit_file(hash).await?;
    if let Some(unit) = &unit {
        let mut cache = state.units.lock().await;
        if cache.len() >= 2 * units + 64 {
            cache.clear();
        }
        cache.insert(*hash, unit.clone());
    }
    Ok(unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_registry::local::LocalStore;

    #[tokio::test]
    async fn the_unit_file_cache_forgets_files_no_unit_uses() {
        let registry = Registry::open(Arc::new(LocalStore::in_memory()))
            .await
            .unwrap();
        let state = ApiState::new(registry.clone(), 100, "test");
        let name = UnitName::new("churn.service").unwrap();
        for i in 0..300 {
            let text = format!("[Service]\nExecStart=/bin/sleep {i}\n");
            registry.destroy_job(&name).await.unwrap();
            registry
                .create_job(&name, &UnitFile::parse(&text).unwrap(), JobState::Inactive)
                .await
                .unwrap();
            let snapshot = Listed::new(registry.snapshot(&Scope::All).await.unwrap());
            let unit = unit_view(&state, &snapshot, &name).await.unwrap().unwrap();
            assert_eq!(unit.options[0].value, format!("/bin/sleep {i}"), "current");
        }
        let cached = state.units.lock().await.len();
        assert!(cached <= 2 + 64, "one unit in use, {cached} files cached");
    }
}
