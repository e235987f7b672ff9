"""Reads rUS entitlement documents the way a Conary repository does, with real expat.

Written for entgate's tests from the behaviour described in shared/reference/conary-client.md
(not from Conary's source). A Conary repository (Python 2):

- parses the whole body with one expat `Parse(body)` call, `isfinal` left at its default
  (False): errors expat only detects at the end of input (an element left open, an empty
  body) go unnoticed;
- allows only the elements entitlement, server, class, key and timeout; any other raises;
- keeps, per element, only the LAST chunk of character data expat delivered since the element
  (or any later element) started: expat splits text at entity references and newlines, so
  `my&amp;Product` reads `Product` and `ab\\ncd` reads `cd`; an element without text reads as
  the string 'None' (Python 2 `str(None)`);
- converts each value with Python 2 `str()` of a unicode object: any non-ASCII character
  raises UnicodeEncodeError;
- on </timeout>: `retry = (str(attrs['retry']) == 'True')` (a KeyError when the attribute is
  absent and not defaulted by the DTD), then `timeout = int(attrs['val'])` when `val` is there;
  `retry` defaults to True and `timeout` to None;
- then reads, outside any handler, `p['server']` (compared with the server it asked about,
  character for character: a mismatch is no access), then `p['class']`, `p['key']` and
  `p['retry']`: a document without `<class>` or `<key>` raises KeyError, and the client gets
  an internal error instead of access.

Any exception means: no access.

It also plays a whole repository (`op: "check"`), as EntitlementAuthorization.getAuthorizedRoles
does it: a grant cache keyed on server + class + key (not on the client's address), entries
kept `timeout` seconds (the document's `val`, else the repository's authCacheTimeout, else
-1: not cached), an expired entry with retry False raising an entitlement timeout once; the
URL built with Python 2 urllib.quote and `;`; any failure to open the URL (any non-2xx) is no
access; the returned key looked up in the repository's own entitlements.

Protocol: one JSON object per line on stdin, {"id": n, "doc": <base64 of the body bytes>,
"server": str} or {"id": n, "op": "check", "repo": str, "url": str, "server": str,
"class"?: str, "key": str, "remote_ip"?: str, "now"?: float, "authCacheTimeout"?: int,
"realKeys"?: [str]}; one JSON object per line on stdout, {"id": n, "granted": bool,
"server"?, "class"?, "key"?, "timeout"?, "retry"?, "error"?} (and for a check "asked": bool,
whether the service was asked, and "status" when it answered).
"""
import base64
import json
import sys
import time
import urllib.error
import urllib.request
import xml.parsers.expat

if hasattr(sys, 'set_int_max_str_digits'):
    sys.set_int_max_str_digits(0)  # Python 2 int() has no such limit

ALLOWED = ('entitlement', 'server', 'class', 'key', 'timeout')


def py2_str(value):
    """Python 2 str() of what expat returned (unicode, or None for an element without text)."""
    if value is None:
        return 'None'
    value.encode('ascii')  # raises UnicodeEncodeError exactly where Python 2 str() would
    return value


def py2_int(value):
    """Python 2 int() of a unicode string: like Python 3's, but without '_' separators."""
    if '_' in value:
        raise ValueError('invalid literal for int() with base 10: %r' % value)
    return int(value)


def read_document(body):
    fields = {'retry': True, 'timeout': None}
    open_elements = []
    last_chunk = [None]

    def start(name, attrs):
        if name not in ALLOWED:
            raise SyntaxError('element <%s> is not allowed' % name)
        open_elements.append((name, attrs))
        last_chunk[0] = None

    def end(_name):
        name, attrs = open_elements.pop()
        if name == 'timeout':
            fields['retry'] = py2_str(attrs['retry']) == 'True'
            if 'val' in attrs:
                fields['timeout'] = py2_int(attrs['val'])
        else:
            fields[name] = py2_str(last_chunk[0])

    def characters(data):
        last_chunk[0] = data

    parser = xml.parsers.expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    parser.Parse(body)  # one call on the whole body, isfinal left at its default, as Conary does
    return fields


def judge(body, requested_server):
    try:
        fields = read_document(body)
        server = fields['server']  # compared first: a KeyError when absent
    except Exception as err:  # anything at all: no access
        return {'granted': False, 'error': '%s: %s' % (type(err).__name__, err)}
    verdict = {'server': server, 'timeout': fields['timeout'], 'retry': fields['retry']}
    if 'class' in fields:
        verdict['class'] = fields['class']
    if 'key' in fields:
        verdict['key'] = fields['key']
    if server != requested_server:
        verdict['granted'] = False
        verdict['error'] = 'server mismatch: asked %r, answered %r' % (requested_server, server)
    elif 'class' not in fields:  # p['class'], read unconditionally
        verdict['granted'] = False
        verdict['error'] = "KeyError: 'class' (an internal error in the repository)"
    elif 'key' not in fields:
        verdict['granted'] = False
        verdict['error'] = "KeyError: 'key' (an internal error in the repository)"
    else:
        verdict['granted'] = True
    return verdict


PY2_SAFE = set(b'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/')


def py2_quote(value):
    """Python 2 urllib.quote(value) of a byte string: `~` is quoted too."""
    return ''.join(chr(b) if b in PY2_SAFE else '%%%02X' % b for b in value.encode('utf-8'))


REPOSITORIES = {}


def check(request):
    """One entitlement presented to a repository, as getAuthorizedRoles handles it."""
    cache = REPOSITORIES.setdefault(request['repo'], {})
    now = request.get('now')
    if now is None:
        now = time.time()
    server, entitlement_class, entitlement = request['server'], request.get('class'), request['key']
    # Python 2 '%s' % None is 'None'
    entry = '%s%s%s' % (server, 'None' if entitlement_class is None else entitlement_class, entitlement)
    roles, timeout, auto_retry = cache.get(entry, (None, None, None))
    if timeout is not None and now < timeout:
        return {'granted': bool(roles), 'asked': False, 'cached': True}
    elif timeout is not None:
        del cache[entry]
        if auto_retry is not True:
            return {'granted': False, 'asked': False, 'error': 'EntitlementTimeout'}

    if entitlement_class is not None:
        url = '%s?server=%s;class=%s;key=%s' % (request['url'], py2_quote(server), py2_quote(entitlement_class), py2_quote(entitlement))
    else:
        url = '%s?server=%s;key=%s' % (request['url'], py2_quote(server), py2_quote(entitlement))
    if request.get('remote_ip') is not None:
        url += ';remote_ip=%s' % py2_quote(request['remote_ip'])
    try:
        # Conary sets no timeout; a generous one keeps a broken service from hanging the tests.
        response = urllib.request.urlopen(url, timeout=60)
        status, body = response.status, response.read()
    except urllib.error.HTTPError as err:
        return {'granted': False, 'asked': True, 'status': err.code, 'error': 'HTTP %d' % err.code}
    except Exception as err:
        return {'granted': False, 'asked': True, 'error': '%s: %s' % (type(err).__name__, err)}
    verdict = judge(body, server)
    verdict['asked'] = True
    verdict['status'] = status
    if not verdict['granted']:
        return verdict
    cache_timeout = verdict['timeout'] if verdict['timeout'] is not None else request.get('authCacheTimeout')
    if cache_timeout is None:
        cache_timeout = -1
    real_keys = request.get('realKeys')
    roles = real_keys is None or verdict['key'] in real_keys
    cache[entry] = (roles, now + cache_timeout, verdict['retry'])
    verdict['granted'] = roles
    if not roles:
        verdict['error'] = 'no roles: the real key %r is not in the repository' % verdict['key']
    return verdict


def main():
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return
        request = json.loads(line)
        if request.get('op') == 'check':
            verdict = check(request)
        else:
            verdict = judge(base64.b64decode(request['doc']), request['server'])
        verdict['id'] = request['id']
        sys.stdout.write(json.dumps(verdict) + '\n')
        sys.stdout.flush()


main()
