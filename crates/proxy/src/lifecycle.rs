//! The request lifecycle: a client connection served request after request,
//! each one through the phases in their fixed order (see the crate docs),
//! then logged.

use std::net::SocketAddr;
use std::rc::Rc;

use httpx::{HttpError, RequestHead};
use tokio::net::TcpStream;

use crate::log::Code;
use crate::request::Request;
use crate::role::{Filter, Role};
use crate::rules::Verdict;
use crate::session::{Next, Session};
use crate::worker::Worker;

/// The answer to a request the access rules deny (the rule is logged, not
/// told to the client).
const DENIED: &str = "access denied by the proxy's http_access rules";

/// Serves one client connection until it closes or must be closed.
pub(crate) async fn serve<R: Role>(w: Rc<Worker<R>>, stream: TcpStream, peer: SocketAddr) {
    let format = w.log.borrow().format();
    let admitted = Session::admit(stream, peer, &w.settings, &w.open, &w.stop, format).await;
    let Some(mut s) = admitted else {
        return;
    };
    while let Some(head) = s.next_head(&w.settings.limits, &w.log).await {
        s.log.begin(&head);
        let next = if s.allowed() {
            // The phases run in a future of their own, on the heap only
            // while a request is in flight: between requests (and while a
            // head comes slowly) the connection's task is the size of the
            // session and the head read, not of the role's largest phase.
            Box::pin(handle(&w, &mut s, head)).await
        } else {
            s.log.code = Code::Denied;
            let e = HttpError::new(403, "client address not in allow_clients");
            s.reject(e).await
        };
        if !s.log.unlogged {
            w.log.borrow_mut().log(&s.log.entry(s.ip()));
        }
        w.metrics.shard(w.index).record(&s.log);
        if next == Next::Close {
            return;
        }
    }
}

/// One request: checked by the layer, its access checked, then the role's
/// request filter, then forwarded (or tunnelled).
async fn handle<R: Role>(w: &Worker<R>, s: &mut Session, head: RequestHead) -> Next {
    if crate::internal::is_internal(&head, s.ip()) {
        return crate::internal::answer(w, s, &head).await;
    }
    let client = (s.ip(), s.is_local());
    let req = match Request::check(head, client, &w.settings, &mut s.log) {
        Ok(r) => r,
        Err(e) => return s.reject(e).await,
    };
    if let Err(e) = w.settings.access.check(&req.asked()) {
        s.log.code = Code::Denied;
        return s.reject(e).await;
    }
    if !w.settings.rules.is_empty() {
        let facts = req.facts(s.local_port(), &w.settings.listener_name);
        if let Verdict::Deny(rule) = w.settings.rules.check(&facts) {
            tracing::debug!(client = %s.ip(), url = %String::from_utf8_lossy(req.uri.effective()), rule = %rule, "denied by http_access");
            s.log.code = Code::Denied;
            s.log.denied_by = Some(rule.clone());
            return s.reject(HttpError::new(403, DENIED)).await;
        }
    }
    let mut ctx = R::Ctx::default();
    match w.role.request_filter(s, &req, &mut ctx).await {
        Filter::Answered(next) => next,
        Filter::Forward if req.is_connect() => crate::tunnel::tunnel(w, s, &req, &mut ctx).await,
        Filter::Forward => crate::forward::forward(w, s, &req, &mut ctx).await,
    }
}
