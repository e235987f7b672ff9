"""Reads entitlement documents the way a Conary repository does, with real expat.

Written for entgate's tests from the behaviour described in shared/reference/conary-client.md
(Conary's EntitlementParser and EntitlementAuthorization): only the elements entitlement,
server, class, key and timeout are allowed; each element keeps only the LAST chunk of
character data expat delivered (expat splits at entity references and newlines); an empty
element reads as the string 'None'; values pass through Python 2 str(), so any non-ASCII
character fails; <timeout> reads attrs['retry'] unconditionally (a KeyError unless present or
defaulted by the DTD) and int(attrs['val']) when present; the answer's server must equal the
requested server exactly; a missing key fails.

Protocol: one JSON object per line on stdin, {"doc": str, "server": str}; one JSON object per
line on stdout, {"granted": bool, "server"?, "class"?, "key"?, "timeout"?, "retry"?, "error"?}.
"""
import json
import sys
import xml.parsers.expat

ALLOWED = ('entitlement', 'server', 'class', 'key', 'timeout')


def py2_str(value):
    if value is None:
        return 'None'
    for ch in value:
        if ord(ch) > 127:
            raise UnicodeEncodeError('ascii', value, 0, 1, 'ordinal not in range(128)')
    return str(value)


class Reader(dict):
    def __init__(self):
        dict.__init__(self)
        self['retry'] = True
        self['timeout'] = None
        self.state = []
        self.data = None
        self.parser = xml.parsers.expat.ParserCreate()
        self.parser.StartElementHandler = self.start
        self.parser.EndElementHandler = self.end
        self.parser.CharacterDataHandler = self.chars

    def start(self, name, attrs):
        if name not in ALLOWED:
            raise SyntaxError('element %s is not allowed' % name)
        self.state.append((name, attrs))
        self.data = None

    def end(self, name):
        state, attrs = self.state.pop()
        if state == 'timeout':
            self['retry'] = py2_str(attrs['retry']) == 'True'
            if 'val' in attrs:
                self['timeout'] = int(attrs['val'])
        else:
            self[state] = py2_str(self.data)

    def chars(self, data):
        self.data = data


def judge(doc, requested_server):
    body = doc.encode('utf-8')
    reader = Reader()
    try:
        if b'<entitlement>' not in body:
            body = b'<entitlement>' + body + b'</entitlement>'
        reader.parser.Parse(body, True)
        cls = reader.get('class', None)
        key = reader['key']
    except Exception as err:  # anything at all means: no access
        return {'granted': False, 'error': '%s: %s' % (type(err).__name__, err)}
    server = reader.get('server')
    out = {'server': server, 'key': key, 'timeout': reader['timeout'], 'retry': reader['retry']}
    if cls is not None:
        out['class'] = cls
    if server != requested_server:
        out['granted'] = False
        out['error'] = 'server mismatch: asked %r, answered %r' % (requested_server, server)
    else:
        out['granted'] = True
    return out


for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.write(json.dumps(judge(request['doc'], request['server'])) + '\n')
    sys.stdout.flush()
