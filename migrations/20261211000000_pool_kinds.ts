import type { Knex } from 'knex';
import { createAcquireFunction } from './20261210000000_lease_credentials.ts';

/**
 * Pool kinds as data (issue 13). A pool is `named` (an admin's), `virtual_key` (the seats of
 * `virtual_key_id`) or `ses_application` (the seats of the SES application in
 * `ses_application`: its id in lower case, or a hash of it, as in its name `ses-<...>`). Until
 * now the kind was read from the name's prefix; existing pools are classified once, here, the
 * way that reading did (a virtual key's pool by its key). A pool is named unless it says whom
 * it belongs to; the CHECK keeps kind and owner together, and owned pools never anonymous.
 *
 * The acquire function now takes the kind the caller holds: a named pool is found by name, an
 * SES application's by its application (made on first use), a virtual key's by its key (made
 * or its seats set); a pool of another kind than the holder's is refused under its lock
 * (`other_kind`) and no seat is taken.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw("alter table lease_pools add column kind text not null default 'named'");
  await knex.raw('alter table lease_pools add column ses_application text unique');
  await knex.raw("update lease_pools set kind = 'virtual_key' where virtual_key_id is not null");
  await knex.raw("update lease_pools set kind = 'ses_application', ses_application = substr(name, 5) where virtual_key_id is null and name like 'ses-%'");
  await knex.raw(`
    alter table lease_pools add constraint lease_pools_kind_check check (
         (kind = 'named' and virtual_key_id is null and ses_application is null)
      or (kind = 'virtual_key' and virtual_key_id is not null and ses_application is null and not anonymous)
      or (kind = 'ses_application' and virtual_key_id is null and ses_application is not null and not anonymous))`);
  await knex.raw('drop function entgate_lease_acquire(text, integer, integer, json, text, integer, uuid, text, jsonb, text)');
  await knex.raw(ACQUIRE_FUNCTION);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop function entgate_lease_acquire(text, text, integer, text, integer, json, text, integer, uuid, text, jsonb, text)');
  await knex.raw('alter table lease_pools drop constraint lease_pools_kind_check');
  await knex.raw('alter table lease_pools drop column ses_application');
  await knex.raw('alter table lease_pools drop column kind');
  await createAcquireFunction(knex);
}

/** Exported for the down() of the migration after this one. */
export const ACQUIRE_FUNCTION = `
create function entgate_lease_acquire(
  p_kind text, p_name text, p_vk_id integer, p_application text, p_seats integer, p_create json,
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
  if p_kind = 'virtual_key' then
    insert into lease_pools (kind, name, virtual_key_id, seats, default_ttl_seconds, max_ttl_seconds, heartbeat_interval_seconds, require_signed)
    values ('virtual_key', p_name, p_vk_id, p_seats, (p_create->>'defaultTtlSeconds')::integer, (p_create->>'maxTtlSeconds')::integer,
            (p_create->>'heartbeatIntervalSeconds')::integer, false)
    on conflict (virtual_key_id) do update
      set seats = excluded.seats,
          updated_at = case when lease_pools.seats = excluded.seats then lease_pools.updated_at else now() end
    returning * into v_pool;
  else
    if p_kind = 'ses_application' then
      insert into lease_pools (kind, name, ses_application, seats, default_ttl_seconds, max_ttl_seconds, heartbeat_interval_seconds, require_signed)
      values ('ses_application', p_name, p_application, (p_create->>'seats')::integer, (p_create->>'defaultTtlSeconds')::integer,
              (p_create->>'maxTtlSeconds')::integer, (p_create->>'heartbeatIntervalSeconds')::integer, false)
      on conflict do nothing;
      select * into v_pool from lease_pools where ses_application = p_application for update;
    else
      select * into v_pool from lease_pools where name = p_name for update;
    end if;
    if not found then
      return json_build_object('outcome', 'no_pool');
    end if;
  end if;
  if v_pool.kind <> p_kind then
    return json_build_object('outcome', 'other_kind', 'pool', row_to_json(v_pool));
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
$fn$`;
