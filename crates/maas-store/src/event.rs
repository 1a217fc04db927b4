//! The event log: append-only.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_core::event::{Event, EventLevel, NewEvent};
use maas_core::ids::EventId;
use maas_core::lifecycle::NodeStatus;
use maas_core::repo::{EventFilter, EventRepository, RepoResult};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::convert::{corrupt, parse};
use crate::entity::event;
use crate::{SqlStore, db_err};

pub(crate) async fn insert_event<C: ConnectionTrait>(
    conn: &C,
    e: &NewEvent,
    now: DateTime<Utc>,
) -> RepoResult<Event> {
    let row = event::ActiveModel {
        id: NotSet,
        created: Set(now),
        level: Set(e.level.as_str().to_owned()),
        kind: Set(e.kind.clone()),
        actor: Set(e.actor.clone()),
        system_id: Set(e.system_id.as_ref().map(ToString::to_string)),
        status_from: Set(e.status_from.map(|s| i32::from(s.code()))),
        status_to: Set(e.status_to.map(|s| i32::from(s.code()))),
        message: Set(e.message.clone()),
    }
    .insert(conn)
    .await
    .map_err(db_err)?;
    event_from_row(&row)
}

fn event_from_row(r: &event::Model) -> RepoResult<Event> {
    let status = |code: Option<i32>| -> RepoResult<Option<NodeStatus>> {
        code.map(|c| {
            NodeStatus::from_code(i64::from(c))
                .ok_or_else(|| corrupt("event", r.id, format!("status {c}")))
        })
        .transpose()
    };
    Ok(Event {
        id: EventId(r.id),
        created: r.created,
        event: NewEvent {
            level: EventLevel::parse(&r.level)
                .ok_or_else(|| corrupt("event", r.id, format!("level {:?}", r.level)))?,
            kind: r.kind.clone(),
            actor: r.actor.clone(),
            system_id: r
                .system_id
                .as_deref()
                .map(|s| parse("event", r.id, s))
                .transpose()?,
            status_from: status(r.status_from)?,
            status_to: status(r.status_to)?,
            message: r.message.clone(),
        },
    })
}

#[async_trait]
impl EventRepository for SqlStore {
    async fn event_append(&self, event: &NewEvent) -> RepoResult<Event> {
        insert_event(&self.db, event, Utc::now()).await
    }

    async fn event_list(&self, filter: &EventFilter) -> RepoResult<Vec<Event>> {
        let mut q = event::Entity::find().order_by_desc(event::Column::Id);
        if let Some(s) = &filter.system_id {
            q = q.filter(event::Column::SystemId.eq(s.to_string()));
        }
        if let Some(after) = filter.after {
            q = q.filter(event::Column::Id.gt(after.0));
        }
        if let Some(n) = filter.limit {
            q = q.limit(n);
        }
        q.all(&self.db)
            .await
            .map_err(db_err)?
            .iter()
            .map(event_from_row)
            .collect()
    }
}
