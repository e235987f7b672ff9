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
- then grants only when the answer's `server` equals the server it asked about, character for
  character, and a `key` is present (`class` is optional).

Any exception means: no access.

Protocol: one JSON object per line on stdin, {"id": n, "doc": <base64 of the body bytes>,
"server": str}; one JSON object per line on stdout, {"id": n, "granted": bool, "server"?,
"class"?, "key"?, "timeout"?, "retry"?, "error"?}.
"""
import base64
import json
import sys
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
    elif 'key' not in fields:
        verdict['granted'] = False
        verdict['error'] = "KeyError: 'key'"
    else:
        verdict['granted'] = True
    return verdict


def main():
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return
        request = json.loads(line)
        verdict = judge(base64.b64decode(request['doc']), request['server'])
        verdict['id'] = request['id']
        sys.stdout.write(json.dumps(verdict) + '\n')
        sys.stdout.flush()


main()
