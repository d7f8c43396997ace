//! Go's `net/http/pprof` handlers on the monitor server, as upstream installs them with
//! `commonConfig.monitorServer.enableProfiling` (feature `profiling`): `/debug/pprof/profile`
//! samples the process's CPU for `?seconds=N` (30 by default) and answers a profile in pprof's
//! protobuf format, which `go tool pprof` and other pprof viewers read;
//! `/debug/pprof/cmdline` is the command line, NUL-separated; `/debug/pprof/` lists them.
//! Go's runtime profiles (heap, goroutine, trace, ...) have no equivalent and answer 404.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use pprof::protos::Message as _;

/// The longest profile served (Go's own limit is the server's write timeout).
const MAX_SECONDS: u64 = 600;

const INDEX: &str = "/debug/pprof/\n\n\
profile: CPU profile in pprof's protobuf format; ?seconds=N (default 30)\n\
cmdline: the command line, NUL-separated\n";

fn answer(status: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(kind));
    resp
}

fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    answer(status, "text/plain; charset=utf-8", body)
}

/// The answer to `path` (under `/debug/pprof/`) with `query`, or `None` for other paths.
pub(super) async fn handle(path: &str, query: Option<&str>) -> Option<Response<Full<Bytes>>> {
    let name = path.strip_prefix("/debug/pprof")?;
    Some(match name {
        "" | "/" => plain(StatusCode::OK, INDEX),
        "/cmdline" => plain(
            StatusCode::OK,
            std::env::args().collect::<Vec<_>>().join("\0"),
        ),
        "/profile" => match seconds(query) {
            Ok(secs) => profile(Duration::from_secs(secs)).await,
            Err(why) => plain(StatusCode::BAD_REQUEST, why),
        },
        other => plain(
            StatusCode::NOT_FOUND,
            format!(
                "profile {:?} is not served here: Go's runtime profiles have no equivalent (see /debug/pprof/)\n",
                other.trim_start_matches('/')
            ),
        ),
    })
}

/// `?seconds=` as Go reads it: a positive integer, 30 when absent or not positive.
fn seconds(query: Option<&str>) -> Result<u64, String> {
    let Some(raw) = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "seconds")
        .map(|(_, v)| v.into_owned())
    else {
        return Ok(30);
    };
    let n: i64 = raw
        .parse()
        .map_err(|_| format!("bad seconds {raw:?}: not an integer\n"))?;
    let n = u64::try_from(n).ok().filter(|n| *n > 0).unwrap_or(30);
    if n > MAX_SECONDS {
        return Err(format!(
            "profile duration {n}s exceeds the longest served ({MAX_SECONDS}s)\n"
        ));
    }
    Ok(n)
}

/// Samples the whole process for `duration` (one profile at a time, as Go).
async fn profile(duration: Duration) -> Response<Full<Bytes>> {
    let failed =
        |what: &str, e: pprof::Error| (StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}\n"));
    let taken = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, (StatusCode, String)> {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(100)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map_err(|e| failed("Could not enable CPU profiling", e))?;
        std::thread::sleep(duration);
        let report = guard
            .report()
            .build()
            .map_err(|e| failed("cannot build the profile", e))?;
        let proto = report
            .pprof()
            .map_err(|e| failed("cannot encode the profile", e))?;
        Ok(proto.encode_to_vec())
    })
    .await;
    match taken {
        Ok(Ok(body)) => {
            let mut resp = answer(StatusCode::OK, "application/octet-stream", body);
            resp.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                http::HeaderValue::from_static("attachment; filename=\"profile\""),
            );
            resp
        }
        Ok(Err((status, why))) => plain(status, why),
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the profile failed: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_read_as_go_reads_them() {
        assert_eq!(seconds(None), Ok(30));
        assert_eq!(seconds(Some("seconds=5")), Ok(5));
        assert_eq!(seconds(Some("x=1&seconds=0")), Ok(30));
        assert_eq!(seconds(Some("seconds=-3")), Ok(30));
        assert!(seconds(Some("seconds=ten")).is_err());
        assert!(seconds(Some("seconds=601")).is_err());
    }
}
