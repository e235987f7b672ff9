import type { Knex } from 'knex';
import * as previous from './20261123040000_lease_acquire.ts';

/**
 * No anonymous seats by default (issue 12). A pool is acquired with a client token (scope
 * `leases:client`), a virtual key or a signed request, unless an admin made it `anonymous`.
 * Every pool that existed before is made anonymous, so that its clients keep working (the
 * service warns about them at start). A lease remembers the credential that acquired it
 * (`token:<id>`, `signed:<clientId>`, `vk:<id>`, or null for an anonymous one): its
 * heartbeat and release need the same, and so does re-acquiring it by its clientId, which the
 * acquire function now checks while it holds the pool's lock.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('alter table lease_pools add column anonymous boolean not null default false');
  // Pools of virtual keys and SES applications keep their own rules; signed pools already need a credential.
  await knex.raw("update lease_pools set anonymous = true where virtual_key_id is null and name not like 'ses-%' and not require_signed");
  await knex.raw('alter table leases add column credential text');
  await knex.raw('drop function entgate_lease_acquire(text, integer, integer, json, text, integer, uuid, text, jsonb)');
  await createAcquireFunction(knex);
}

/** This migration's acquire function (also made again when the next migration is undone). */
export async function createAcquireFunction(knex: Knex): Promise<void> {
  await knex.raw(`
create function entgate_lease_acquire(
  p_pool text, p_vk_id integer, p_seats integer, p_create json,
  p_client text, p_ttl integer, p_id uuid, p_address text, p_metadata jsonb, p_credential text
) returns json language plpgsql volatile as $fn$
declare
  v_pool lease_pools%rowtype;
  v_now timestamptz;
  v_ttl integer;
  v_lease leases%rowtype;
  v_in_use integer;
  v_earliest timestamptz;
begin
  if p_vk_id is not null then
    insert into lease_pools (name, seats, default_ttl_seconds, max_ttl_seconds, heartbeat_interval_seconds, require_signed, virtual_key_id)
    values ('vk-' || p_vk_id, p_seats, (p_create->>'defaultTtlSeconds')::integer, (p_create->>'maxTtlSeconds')::integer,
            (p_create->>'heartbeatIntervalSeconds')::integer, false, p_vk_id)
    on conflict (virtual_key_id) do update
      set seats = excluded.seats,
          updated_at = case when lease_pools.seats = excluded.seats then lease_pools.updated_at else now() end
    returning * into v_pool;
  else
    if p_create is not null then
      insert into lease_pools (name, seats, default_ttl_seconds, max_ttl_seconds, heartbeat_interval_seconds, require_signed)
      values (p_pool, (p_create->>'seats')::integer, (p_create->>'defaultTtlSeconds')::integer, (p_create->>'maxTtlSeconds')::integer,
              (p_create->>'heartbeatIntervalSeconds')::integer, false)
      on conflict (name) do nothing;
    end if;
    select * into v_pool from lease_pools where name = p_pool for update;
    if not found then
      return json_build_object('outcome', 'no_pool');
    end if;
  end if;

  v_ttl := coalesce(p_ttl, least(v_pool.default_ttl_seconds, v_pool.max_ttl_seconds));
  if v_ttl > v_pool.max_ttl_seconds then
    return json_build_object('outcome', 'ttl_too_long', 'pool', row_to_json(v_pool));
  end if;

  -- The client's live lease is given back only to the credential that acquired it: a clientId
  -- is chosen by the client, so another caller naming it must not renew (or learn) that lease.
  select * into v_lease from leases
   where pool_id = v_pool.id and client_id = p_client and released_at is null and expires_at > clock_timestamp()
   limit 1;
  if found and v_lease.credential is distinct from p_credential then
    insert into lease_events (occurred_at, type, pool, lease_id, client_id, reason, client_address)
    values (clock_timestamp(), 'denied', v_pool.name, null, p_client, 'client_id_in_use', p_address);
    return json_build_object('outcome', 'client_id_in_use', 'pool', row_to_json(v_pool));
  end if;
  update leases set renewed_at = clock_timestamp(), expires_at = clock_timestamp() + make_interval(secs => v_ttl), ttl_seconds = v_ttl
   where id = v_lease.id
  returning * into v_lease;
  if found then
    v_now := v_lease.renewed_at;
    insert into lease_events (occurred_at, type, pool, lease_id, client_id, reason, client_address)
    values (v_now, 'renewed', v_pool.name, v_lease.id, p_client, 'reacquired', p_address);
    return json_build_object('outcome', 'existing', 'lease', row_to_json(v_lease), 'pool', row_to_json(v_pool));
  end if;

  -- The clock is read inside the counting statement, after its snapshot was taken: a release
  -- this count does not see committed after that, so it is counted live (never too few), and
  -- one it does see ended before v_now, where the new lease starts (never an overlap).
  select t.now, count(l.id)::integer, min(l.expires_at) into v_now, v_in_use, v_earliest
    from (select clock_timestamp() as now) t
    left join leases l on l.pool_id = v_pool.id and l.released_at is null and l.expires_at > t.now
   group by t.now;
  if v_in_use >= v_pool.seats then
    insert into lease_events (occurred_at, type, pool, lease_id, client_id, reason, client_address)
    values (v_now, 'denied', v_pool.name, null, p_client, 'no_seat_available', p_address);
    return json_build_object('outcome', 'full', 'pool', row_to_json(v_pool), 'inUse', v_in_use, 'earliest', v_earliest, 'now', v_now);
  end if;

  insert into leases (id, pool_id, client_id, acquired_at, renewed_at, expires_at, ttl_seconds, client_address, metadata, credential)
  values (p_id, v_pool.id, p_client, v_now, v_now, v_now + make_interval(secs => v_ttl), v_ttl, p_address, coalesce(p_metadata, '{}'::jsonb), p_credential)
  returning * into v_lease;
  insert into lease_events (occurred_at, type, pool, lease_id, client_id, reason, client_address)
  values (v_now, 'acquired', v_pool.name, v_lease.id, p_client, null, p_address);
  return json_build_object('outcome', 'acquired', 'lease', row_to_json(v_lease), 'pool', row_to_json(v_pool));
end
$fn$`);
}

export async function down(knex: Knex): Promise<void> {
  // Already gone when a later migration replaced it (a test undoes this one alone).
  await knex.raw('drop function if exists entgate_lease_acquire(text, integer, integer, json, text, integer, uuid, text, jsonb, text)');
  await knex.raw('alter table leases drop column credential');
  await knex.raw('alter table lease_pools drop column anonymous');
  await previous.up(knex);
}
