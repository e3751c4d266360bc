//! `find_tagged!` and `describe_by_id!`: how an EC2 resource's `find` and `read` go
//! through the refresh's snapshot (one listing per type) or ask AWS.

/// The ids of the EC2 resources of `$kind` that carry the stack's tags for it (those
/// `$keep` accepts, when given): `$id` of each of `$list`. Within a refresh they come
/// from the snapshot's one listing of the type (`$list`, by the stack's tags, split
/// here by the address tag); otherwise from one `$describe` call (`$action`) with the
/// kind's tag filters. Every EC2 resource's `find`.
macro_rules! find_tagged {
    ($s:expr, $kind:expr, $describe:ident, $action:literal, $list:ident, $id:ident $(, keep $keep:expr)?) => {{
        let ids: Vec<String> = match $s.snapshot() {
            Some(snap) => snap
                .$list($s, $kind)
                .await?
                .iter()
                .filter(|v| tags::has_address(v.tags(), $kind))
                $(.filter($keep))?
                .filter_map(|v| v.$id().map(str::to_string))
                .collect(),
            None => {
                let out = $s
                    .clients
                    .ec2
                    .$describe()
                    .set_filters(Some(tags::filters($s.cfg, $kind)))
                    .send()
                    .await
                    .map_err(|e| AwsError::new($kind.address(), $action, e))?;
                out.$list()
                    .iter()
                    $(.filter($keep))?
                    .filter_map(|v| v.$id().map(str::to_string))
                    .collect()
            }
        };
        Ok(ids)
    }};
}

/// The one of `$list` whose `$get` is `$id`; `None` when AWS answers not-found or lists
/// nothing. Within a refresh it comes from the snapshot's listing of the type when it
/// is there (no call); otherwise (outside a refresh, or an id the tag listing lacks:
/// its tags were changed by hand, or it is gone) from one `$describe` call (`$action`)
/// naming `$id` through its `$ids` setter. Errors name `$kind`'s address. How an EC2
/// resource's `read` (and a child's, through its parent) looks one up by id.
macro_rules! describe_by_id {
    ($s:expr, $kind:expr, $describe:ident($ids:ident = $id:expr), $action:literal, $list:ident, $get:ident) => {{
        let id: &str = $id;
        let listed = match $s.snapshot() {
            Some(snap) => snap
                .$list($s, $kind)
                .await?
                .iter()
                .find(|v| v.$get() == Some(id))
                .cloned(),
            None => None,
        };
        match listed {
            Some(v) => Some(v),
            None => {
                let _permit = $s.permit().await;
                let out = $s.clients.ec2.$describe().$ids(id).send().await;
                crate::aws::or_absent(out, &$kind.address(), $action)?
                    .and_then(|out| out.$list.and_then(|v| v.into_iter().next()))
            }
        }
    }};
}
