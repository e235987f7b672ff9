import { LRUCache } from 'lru-cache';

/**
 * A bounded LRU whose entries belong to groups (a key hash), so that every entry of one
 * virtual key can be dropped at once when an admin changes it, whatever server or address it
 * was cached for. The group index shrinks as the LRU evicts.
 */
export class GroupedCache<V extends object> {
  private readonly lru: LRUCache<string, { group: string; value: V }> | undefined;
  private readonly groups = new Map<string, Set<string>>();

  constructor(max: number) {
    this.lru =
      max > 0
        ? new LRUCache({
            max,
            dispose: (entry, key) => {
              const members = this.groups.get(entry.group);
              members?.delete(key);
              if (members?.size === 0) this.groups.delete(entry.group);
            },
          })
        : undefined;
  }

  get(key: string): V | undefined {
    return this.lru?.get(key)?.value;
  }

  set(group: string, key: string, value: V, ttlMs: number): void {
    if (!this.lru || ttlMs <= 0) return;
    this.lru.set(key, { group, value }, { ttl: ttlMs });
    let members = this.groups.get(group);
    if (!members) this.groups.set(group, (members = new Set()));
    members.add(key);
  }

  evictGroup(group: string): void {
    const members = this.groups.get(group);
    if (!members) return;
    for (const key of [...members]) this.lru?.delete(key);
    this.groups.delete(group);
  }

  clear(): void {
    this.lru?.clear();
    this.groups.clear();
  }

  get size(): number {
    return this.lru?.size ?? 0;
  }
}
