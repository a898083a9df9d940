//! Ours, beside fleet's API: a unit's log and status from the fleetd of the machine that
//! runs it.

use super::*;

/// `GET /fleet-rs/v1/journal/<name>?lines=N[&machineID=M]`: JSON `{"machineID":..., "lines":[...]}`;
/// 404 when the unit is not known; 409 naming the machine when it runs elsewhere, or when this
/// fleetd is not machine `M`. With `follow=true`: the lines, then every new record as it is
/// written, as `text/plain` lines (see `JOURNAL_MACHINE_HEADER` and `JOURNAL_HEARTBEAT`).
pub(super) async fn journal(state: &ApiState, name: &str, query: &str) -> Result<Response, Answer> {
    let (name, local, here) = local_unit(state, name, query).await?;
    let lines = query_values(query, "lines")
        .first()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10usize)
        .min(100_000);
    let no_log = || {
        Answer::error(
            StatusCode::NOT_FOUND,
            format!("unit {name} has no log on {here}"),
        )
    };
    let follow = query_values(query, "follow")
        .first()
        .is_some_and(|v| v == "true" || v == "1");
    // Following starts before the tail is read, so that no record falls between the two.
    let followed = match follow {
        true => Some(local.follow(&name).await.ok_or_else(no_log)?),
        false => None,
    };
    let lines = local.lines(&name, lines).await.ok_or_else(no_log)?;
    let Some(records) = followed else {
        return Ok(Answer::json(
            StatusCode::OK,
            &Journal {
                machine_id: here,
                lines,
            },
        )
        .into_response());
    };
    let mut response = Response::new(Body::from_stream(followed_lines(
        lines,
        records,
        state.stopping.clone(),
    )));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(machine) = HeaderValue::from_str(&here) {
        headers.insert(JOURNAL_MACHINE_HEADER, machine);
    }
    Ok(response)
}

/// `GET /fleet-rs/v1/status/<name>[?machineID=M]`: JSON `{"machineID":..., "text":...,
/// "exitCode":...}`, `text` being `systemctl status` (null from the native supervisor: the
/// client lays the state out itself, with the `description` given beside it). 404 and 409 as
/// for the journal.
pub(super) async fn status(state: &ApiState, name: &str, query: &str) -> Result<Answer, Answer> {
    let (name, local, here) = local_unit(state, name, query).await?;
    let (text, code) = match local.status(&name).await {
        Ok(Some((text, code))) => (Some(text), code),
        Ok(None) => (None, 0),
        Err(e) => {
            return Err(Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("status of {name} on {here}: {e}"),
            ))
        }
    };
    let description = match text {
        None => local.description(&name).await,
        Some(_) => None,
    };
    Ok(Answer::json(
        StatusCode::OK,
        &UnitStatusText {
            machine_id: here,
            text,
            exit_code: code,
            description,
        },
    ))
}

/// The unit `name` (percent-encoded) when this fleetd's machine runs it, and that machine: 404
/// when the unit is not known, 409 naming the machine when it runs elsewhere or when this
/// fleetd is not the `machineID` the query asks for.
pub(super) async fn local_unit(
    state: &ApiState,
    name: &str,
    query: &str,
) -> Result<(UnitName, Arc<dyn LocalUnits>, String), Answer> {
    let name = percent_decode(name)
        .and_then(|n| UnitName::new(n).ok())
        .ok_or_else(unit_missing)?;
    let snapshot = snapshot(state).await?;
    let Some(local) = &state.local else {
        return Err(Answer::error(
            StatusCode::NOT_FOUND,
            "this fleetd serves no units of its own",
        ));
    };
    let here = local.machine();
    if let Some(wanted) = query_values(query, "machineID").first() {
        if *wanted != here {
            return Err(Answer::error(
                StatusCode::CONFLICT,
                format!("this fleetd is machine {here}, not {wanted}"),
            ));
        }
    }
    let placed: Vec<String> = snapshot.placed_on(&name).map(|m| m.to_string()).collect();
    let global = snapshot.global.contains_key(&name);
    if !global && !snapshot.jobs.contains_key(&name) {
        return Err(unit_missing());
    }
    if !global && !placed.contains(&here) {
        return Err(Answer::error(
            StatusCode::CONFLICT,
            match placed.first() {
                None => format!("unit {name} is not placed on any machine"),
                Some(elsewhere) => {
                    format!("unit {name} runs on machine {elsewhere}, not on {here}")
                }
            },
        ));
    }
    Ok((name, Arc::clone(local), here))
}

/// The body of a followed journal: `first`, then each record from `records` as it comes, one
/// per line, with an empty line after every `JOURNAL_HEARTBEAT` of silence. It ends when the
/// log can no longer be followed or `stopping` turns true; the follower stops when the client
/// goes (the body is dropped).
pub(super) fn followed_lines(
    first: Vec<String>,
    records: tokio::sync::mpsc::Receiver<String>,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::convert::Infallible>> {
    let mut head = String::new();
    for line in first {
        head.push_str(&line);
        head.push('\n');
    }
    let head = futures_util::stream::iter([Ok(head.into_bytes())]);
    let tail = futures_util::stream::unfold(
        (records, stopping),
        |(mut records, mut stopping)| async move {
            let next = tokio::select! {
                next = tokio::time::timeout(JOURNAL_HEARTBEAT, records.recv()) => next,
                () = until_stopping(&mut stopping) => return None,
            };
            let next = match next {
                Ok(Some(record)) => format!("{record}\n"),
                Ok(None) => return None,
                Err(_) => "\n".to_owned(),
            };
            Some((Ok(next.into_bytes()), (records, stopping)))
        },
    );
    futures_util::StreamExt::chain(head, tail)
}

/// Until `stopping` turns true; never, when nobody can make it (the channel closed at `false`).
pub(super) async fn until_stopping(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    if stopping.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
