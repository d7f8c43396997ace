//! RBAC with the stock kubectl: the default roles, bindings made with `kubectl create
//! rolebinding`, `kubectl auth can-i` (as the user and with `--as`), impersonation rights,
//! aggregation, and Kubernetes' 403 messages.

mod common;

use anyhow::ensure;
use common::TestServer;

/// A kubeconfig for a client certificate with `user` as CN and `group` as O.
fn kubeconfig_for(srv: &TestServer, user: &str, group: Option<&str>) -> anyhow::Result<String> {
    let cert = srv.pki.issue_client_cert(user, group)?;
    let path = srv.path(&format!("{user}.kubeconfig"));
    kubeedge_apiserver::write_kubeconfig(
        &path,
        &format!("https://127.0.0.1:{}", srv.addr.port()),
        &srv.pki.ca_pem(),
        Some(&cert),
        None,
    )?;
    Ok(path.display().to_string())
}

/// kubectl's exit status, stdout and stderr.
async fn run(srv: &TestServer, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = srv.kubectl_raw(args, None).await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_gets_what_its_bindings_grant_and_the_kubernetes_403_otherwise() -> anyhow::Result<()>
{
    let srv = TestServer::start().await?;
    let alice = kubeconfig_for(&srv, "alice", None)?;
    let a = |args: &[&'static str]| {
        let mut v: Vec<String> = vec!["--kubeconfig".into(), alice.clone()];
        v.extend(args.iter().map(|s| (*s).to_owned()));
        v
    };
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    // Nothing bound yet: discovery and who-am-I only.
    let (ok, _, err) = run(&srv, &refs(&a(&["get", "pods"]))).await?;
    ensure!(!ok, "unbound user listed pods");
    ensure!(
        err.contains("pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{err}"
    );
    let who = srv
        .kubectl(&refs(&a(&["auth", "whoami", "-o", "json"])))
        .await?;
    ensure!(who.contains("system:authenticated"), "{who}");
    let (ok, out, _) = run(&srv, &refs(&a(&["auth", "can-i", "list", "pods"]))).await?;
    ensure!(!ok && out == "no", "can-i before binding: {ok} {out}");

    // The admin binds the default `view` role in one namespace.
    srv.kubectl(&[
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
        "-n",
        "default",
    ])
    .await?;
    srv.kubectl(&refs(&a(&["get", "pods", "-n", "default"])))
        .await?;
    let (_, out, _) = run(&srv, &refs(&a(&["auth", "can-i", "list", "pods"]))).await?;
    ensure!(out == "yes", "{out}");
    let (ok, out, _) = run(&srv, &refs(&a(&["auth", "can-i", "list", "secrets"]))).await?;
    ensure!(!ok && out == "no", "view reads no secrets: {out}");
    let (_, out, _) = run(
        &srv,
        &refs(&a(&["auth", "can-i", "list", "pods", "-n", "kube-system"])),
    )
    .await?;
    ensure!(out == "no", "the binding is namespaced: {out}");
    let (ok, _, err) = run(
        &srv,
        &refs(&a(&["create", "configmap", "c1", "--from-literal=a=b"])),
    )
    .await?;
    ensure!(
        !ok && err.contains("configmaps is forbidden: User \"alice\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\""),
        "{err}"
    );
    let (ok, _, err) = run(&srv, &refs(&a(&["run", "web", "--image=nginx"]))).await?;
    ensure!(
        !ok && err.contains("pods is forbidden: User \"alice\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{err}"
    );
    let (ok, _, err) = run(
        &srv,
        &refs(&a(&["get", "cm", "-n", "default", "--as", "bob"])),
    )
    .await?;
    ensure!(
        !ok && err.contains("users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{err}"
    );
    let list = srv
        .kubectl(&refs(&a(&["auth", "can-i", "--list", "-n", "default"])))
        .await?;
    ensure!(
        list.contains("pods ") && list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );

    // An admin asks on alice's behalf (impersonation is the masters' right).
    let (_, out, _) = run(&srv, &["auth", "can-i", "get", "pods", "--as", "alice"]).await?;
    ensure!(out == "yes", "{out}");
    let (_, out, _) = run(&srv, &["auth", "can-i", "delete", "pods", "--as", "alice"]).await?;
    ensure!(out == "no", "{out}");
    srv.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_roles_aggregation_and_access_reviews() -> anyhow::Result<()> {
    let srv = TestServer::start().await?;
    let sa = "system:serviceaccount:default:bot";
    srv.kubectl(&["create", "serviceaccount", "bot"]).await?;
    srv.kubectl(&[
        "create",
        "role",
        "cm-reader",
        "--verb=get",
        "--resource=configmaps",
        "--resource-name=settings",
    ])
    .await?;
    srv.kubectl(&[
        "create",
        "rolebinding",
        "bot-cm",
        "--role=cm-reader",
        "--serviceaccount=default:bot",
    ])
    .await?;
    // Its own token (TokenRequest, as `kubectl create token` asks) does what the Role allows.
    srv.kubectl(&["create", "configmap", "settings", "--from-literal=a=b"])
        .await?;
    srv.kubectl(&["create", "configmap", "other", "--from-literal=a=b"])
        .await?;
    let token = srv.kubectl(&["create", "token", "bot"]).await?;
    let bot = srv.path("bot.kubeconfig");
    kubeedge_apiserver::write_kubeconfig(
        &bot,
        &format!("https://127.0.0.1:{}", srv.addr.port()),
        &srv.pki.ca_pem(),
        None,
        Some(token.trim()),
    )?;
    let bot = bot.display().to_string();
    let who = srv
        .kubectl(&["--kubeconfig", &bot, "auth", "whoami"])
        .await?;
    ensure!(
        who.contains(sa) && who.contains("system:serviceaccounts:default"),
        "{who}"
    );
    srv.kubectl(&["--kubeconfig", &bot, "get", "configmap", "settings"])
        .await?;
    let (ok, _, err) = run(&srv, &["--kubeconfig", &bot, "get", "configmap", "other"]).await?;
    ensure!(
        !ok && err.contains(&format!("configmaps \"other\" is forbidden: User \"{sa}\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"default\"")),
        "{err}"
    );
    for (verb, what, want) in [
        ("get", "configmap/settings", "yes"),
        ("get", "configmap/other", "no"),
        ("update", "configmap/settings", "no"),
        ("get", "secrets", "no"),
    ] {
        let (_, out, _) = run(&srv, &["auth", "can-i", verb, what, "--as", sa]).await?;
        ensure!(out == want, "{verb} {what}: {out}, want {want}");
    }
    // A token dies with its ServiceAccount.
    srv.kubectl(&["delete", "serviceaccount", "bot"]).await?;
    let (ok, _, err) = run(
        &srv,
        &["--kubeconfig", &bot, "get", "configmap", "settings"],
    )
    .await?;
    ensure!(!ok && err.contains("Unauthorized"), "{err}");

    // Aggregation: a ClusterRole labelled for `view` adds its rules to view, edit and admin.
    srv.kubectl(&[
        "create",
        "rolebinding",
        "dave-view",
        "--clusterrole=view",
        "--user=dave",
    ])
    .await?;
    let (_, out, _) = run(&srv, &["auth", "can-i", "list", "secrets", "--as", "dave"]).await?;
    ensure!(out == "no", "view reads no secrets: {out}");
    srv.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "secret-lister",
              "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
            "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["secrets"]}]}"#,
    )
    .await?;
    for role in ["view", "edit", "admin"] {
        let rules = srv
            .kubectl(&["get", "clusterrole", role, "-o", "json"])
            .await?;
        let v: serde_json::Value = serde_json::from_str(&rules)?;
        let lists_secrets = v["rules"].as_array().is_some_and(|rs| {
            rs.iter().any(|r| {
                r["resources"] == serde_json::json!(["secrets"])
                    && r["verbs"] == serde_json::json!(["list"])
            })
        });
        ensure!(lists_secrets, "{role}: {rules}");
    }
    let (_, out, _) = run(&srv, &["auth", "can-i", "list", "secrets", "--as", "dave"]).await?;
    ensure!(out == "yes", "aggregated rule: {out}");
    srv.kubectl(&[
        "create",
        "rolebinding",
        "carol-admin",
        "--clusterrole=admin",
        "--user=carol",
    ])
    .await?;

    // A namespace admin grants what it holds, and nothing more (RBAC's escalation check).
    fn carol<'a>(args: &[&'a str]) -> Vec<&'a str> {
        let mut v: Vec<&str> = args.to_vec();
        v.extend(["--as", "carol"]);
        v
    }
    srv.kubectl(&carol(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get",
        "--resource=pods",
    ]))
    .await?;
    srv.kubectl(&carol(&[
        "create",
        "rolebinding",
        "erin-view",
        "--clusterrole=view",
        "--user=erin",
    ]))
    .await?;
    let not_held = "is attempting to grant RBAC permissions not currently held";
    for (args, want) in [
        (
            carol(&["create", "role", "node-reader", "--verb=get", "--resource=nodes"]),
            format!("roles.rbac.authorization.k8s.io \"node-reader\" is forbidden: user \"carol\" (groups=[\"system:authenticated\"]) {not_held}:\n{{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}}"),
        ),
        (
            carol(&["create", "rolebinding", "carol-root", "--clusterrole=cluster-admin", "--user=carol"]),
            format!("rolebindings.rbac.authorization.k8s.io \"carol-root\" is forbidden: user \"carol\" (groups=[\"system:authenticated\"]) {not_held}:"),
        ),
        (
            carol(&["create", "clusterrole", "mine", "--verb=get", "--resource=pods"]),
            "clusterroles.rbac.authorization.k8s.io is forbidden: User \"carol\" cannot create resource \"clusterroles\" in API group \"rbac.authorization.k8s.io\" at the cluster scope".to_owned(),
        ),
    ] {
        let (ok, _, err) = run(&srv, &args).await?;
        ensure!(!ok && err.contains(&want), "{args:?}:\n got: {err}\nwant: {want}");
    }
    let (_, out, _) = run(&srv, &["auth", "can-i", "list", "nodes", "--as", "carol"]).await?;
    ensure!(out == "no", "{out}");

    // A SubjectAccessReview names the binding that allows; a bad binding is refused.
    let sar = srv
        .kubectl_stdin(
            &["create", "-f", "-", "-o", "json"],
            r#"{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": "carol", "resourceAttributes":
                  {"namespace": "default", "verb": "create", "resource": "rolebindings",
                   "group": "rbac.authorization.k8s.io"}}}"#,
        )
        .await?;
    let v: serde_json::Value = serde_json::from_str(&sar)?;
    ensure!(v["status"]["allowed"] == true, "{v}");
    ensure!(
        v["status"]["reason"]
            == "RBAC: allowed by RoleBinding \"carol-admin/default\" of ClusterRole \"admin\" to User \"carol\"",
        "{v}"
    );
    let out = srv
        .kubectl_raw(
            &[
                "patch",
                "rolebinding",
                "carol-admin",
                "--type=merge",
                "-p",
                r#"{"roleRef":{"name":"view"}}"#,
            ],
            None,
        )
        .await?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("cannot change roleRef"),
        "{err}"
    );
    let out = srv
        .kubectl_raw(&["apply", "-f", "-"], Some(
            r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "bad", "namespace": "default"}, "rules": [{"verbs": ["get"]}]}"#,
        ))
        .await?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && err.contains("rules[0].apiGroups: Required value: resource rules must supply at least one api group"),
        "{err}"
    );
    srv.stop().await;
    Ok(())
}
