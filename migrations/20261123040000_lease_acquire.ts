import type { Knex } from 'knex';

/**
 * Acquire as one database call. The pool's row is locked first (or upserted, for the pool of a
 * virtual key or an SES application), and every later statement of this VOLATILE function
 * takes a fresh snapshot (READ COMMITTED), so it sees each lease the previous holder of the
 * lock committed. One clock reading, taken within the counting statement, serves the count
 * and the new lease's start. Called
 * without an explicit transaction, the lock is held for the function and its commit only:
 * no client round trip ever happens while a pool is locked.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
create function entgate_lease_acquire(
  p_pool text, p_vk_id integer, p_seats integer, p_create json,
  p_client text, p_ttl integer, p_id uuid, p_address text, p_metadata jsonb
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

  update leases set renewed_at = clock_timestamp(), expires_at = clock_timestamp() + make_interval(secs => v_ttl), ttl_seconds = v_ttl
   where id = (select id from leases
                where pool_id = v_pool.id and client_id = p_client and released_at is null and expires_at > clock_timestamp()
                limit 1)
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

  insert into leases (id, pool_id, client_id, acquired_at, renewed_at, expires_at, ttl_seconds, client_address, metadata)
  values (p_id, v_pool.id, p_client, v_now, v_now, v_now + make_interval(secs => v_ttl), v_ttl, p_address, coalesce(p_metadata, '{}'::jsonb))
  returning * into v_lease;
  insert into lease_events (occurred_at, type, pool, lease_id, client_id, reason, client_address)
  values (v_now, 'acquired', v_pool.name, v_lease.id, p_client, null, p_address);
  return json_build_object('outcome', 'acquired', 'lease', row_to_json(v_lease), 'pool', row_to_json(v_pool));
end
$fn$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop function entgate_lease_acquire(text, integer, integer, json, text, integer, uuid, text, jsonb)');
}
