"""THREAD's algorithms (RFC 5256 §3 BASE.6.4.THREAD) and the thread-data
response (§4 BASE.7.2.THREAD), pure functions over the matched messages.

- ORDEREDSUBJECT ("poor man's threading"): by base subject, then sent date.
- REFERENCES: the six steps of §3 REFERENCES, message by message in
  sequence order: (1) links from References / In-Reply-To (dummies for IDs
  no message has, no loops, a duplicate Message-ID used by its first
  message only), (2) the roots, (3) dummies pruned, (4) roots by sent
  date, (5) roots merged by base subject, (6) siblings by sent date.
- REFS: Dovecot's THREAD=REFS (lib-storage index-thread-finish.c,
  sort_root_nodes_ref2), after draft-gulbrandsen-imap-inthread: steps 1-3
  and 6 of REFERENCES without the subject merging of step 5, the threads
  ordered by their newest message's sent date instead of their first's.

Every walk over a tree is iterative (a References chain may be as deep as
the folder is large).  Ties of dates go to the sequence order (§2.2).
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple


# Ours: steps the loop checks of one THREAD may walk up the tree (§3
# REFERENCES 1.A).  Real threads are a few dozen deep, so a folder's walks
# stay far below; a crafted folder of long chains linked against their
# grain could make them quadratic, and THREAD runs on the event loop: past
# the budget a link is not made, as if it would loop (about half a second).
# DEVIATION(RFC 5256 §3 REFERENCES): bounded work over every link.
MAX_WALK = 5 * 1000 * 1000


class Msg(NamedTuple):
    """One matched message: ``number`` is what the response names (sequence
    number or UID), ``order`` its position in the mailbox (the tie-breaker,
    RFC 5256 §2.2), ``date`` its sent date (INTERNALDATE when it has none)."""
    number: int
    order: int
    date: float
    subject: str            # the casemap key of the base subject (sort_keys.py)
    reply: bool
    message_id: Optional[str]
    refs: Tuple[str, ...]


class Node:
    """A container of §3 REFERENCES: a message, or a dummy (``msg`` None)."""
    __slots__ = ("msg", "parent", "kids")

    def __init__(self, msg: Optional[Msg] = None):
        self.msg = msg
        self.parent: Optional[Node] = None
        self.kids: List[Node] = []


def _key(node: Node) -> Tuple[float, int]:
    """The sort key of §3 steps 4 and 6: the sent date, then the sequence
    order; a dummy sorts as its first child (its kids sorted before)."""
    while node.msg is None:
        node = node.kids[0]
    return node.msg.date, node.msg.order


# -- ORDEREDSUBJECT -------------------------------------------------------------------

def ordered_subject(msgs: Sequence[Msg]) -> List[Node]:
    """§3 ORDEREDSUBJECT: sorted by base subject then sent date, split into
    threads of one base subject, each the first message with the others as
    its children; the threads by the sent date of their first message."""
    roots: List[Node] = []
    by_subject: Dict[str, Node] = {}
    for msg in sorted(msgs, key=lambda m: (m.subject, m.date, m.order)):
        first = by_subject.get(msg.subject)
        if first is None:
            by_subject[msg.subject] = first = Node(msg)
            roots.append(first)
        else:
            first.kids.append(Node(msg))
    roots.sort(key=_key)
    return roots


# -- REFERENCES step 1 ----------------------------------------------------------------

def _is_ancestor(a: Node, b: Node, budget: List[int]) -> bool:
    """True when ``a`` is ``b`` or one of its ancestors; also True once the
    walks of one THREAD have taken ``budget`` steps (see MAX_WALK)."""
    steps = 0
    while b is not None:
        if b is a:
            break
        b = b.parent
        steps += 1
    budget[0] -= steps
    return b is not None or budget[0] < 0


def _link(parent: Node, child: Node, budget: List[int]) -> bool:
    """Make ``child`` (without a parent) a child of ``parent`` unless that
    would make a loop (§3 REFERENCES 1.A: "before making message A the
    parent of B, make sure that A is not a descendent of B")."""
    if (child.kids or child is parent) and _is_ancestor(child, parent, budget):
        return False                        # (a node without children is no one's ancestor)
    child.parent = parent
    parent.kids.append(child)
    return True


def _unlink(child: Node) -> None:
    child.parent.kids.remove(child)
    child.parent = None


def link_all(msgs: Sequence[Msg]) -> Dict[object, Node]:
    """§3 REFERENCES step 1 for the messages in sequence order: the table of
    containers by Message ID (a message without a usable one by its own
    object)."""
    table: Dict[object, Node] = {}
    budget = [MAX_WALK]
    for msg in msgs:
        mid = msg.message_id
        node = table.get(mid) if mid is not None else None
        if node is None:
            node = Node(msg)
            table[mid if mid is not None else msg] = node
        elif node.msg is None:
            node.msg = msg                  # a dummy so far: now the message
        else:                               # a duplicate: a unique ID of its own (1.A)
            node = table[msg] = Node(msg)
        prev: Optional[Node] = None
        for ref in msg.refs:                # (1.A)
            ref_node = table.get(ref)
            if ref_node is None:
                ref_node = table[ref] = Node()
            if prev is not None and ref_node.parent is None and ref_node is not prev:
                _link(prev, ref_node, budget)
            prev = ref_node
        if node.parent is not None:         # (1.B): the last reference is the parent
            if node.parent is prev:
                continue
            _unlink(node)
        if prev is not None:
            _link(prev, node, budget)
    return table


# -- REFERENCES steps 2 and 3 ---------------------------------------------------------

def gather_roots(table: Dict[object, Node]) -> List[Node]:
    """§3 REFERENCES steps 2 and 3: the containers without a parent, dummies
    pruned.  A dummy below the top is replaced by its children (spliced in
    with its siblings, up to the first message above it or the dummy at the
    top); a dummy at the top without children goes, with one child is
    replaced by it, with more stays (its children are one thread, §4 THREAD
    response: ``((3)(5))``)."""
    target: Dict[int, Node] = {}            # a dummy's id -> where its children go

    def place(dummy: Node) -> Node:
        chain = []
        node = dummy
        while node.msg is None and node.parent is not None and id(node) not in target:
            chain.append(node)
            node = node.parent
        home = target.get(id(node), node) if node.msg is None else node
        for d in chain:
            target[id(d)] = home
        return home

    nodes = list(table.values())
    for node in nodes:
        node.kids = []
    for node in nodes:
        if node.msg is None or node.parent is None:
            continue
        parent = node.parent
        home = parent if parent.msg is not None else place(parent)
        node.parent = home
        home.kids.append(node)
    # dummies below the top are gone (their children placed); so are the childless at the top
    tops = [node for node in nodes if node.parent is None and (node.msg is not None or node.kids)]
    roots = []
    for node in tops:
        if node.msg is None and len(node.kids) == 1:
            node = node.kids[0]
            node.parent = None
        roots.append(node)
    return roots


def _sort_all(roots: List[Node]) -> None:
    """§3 REFERENCES step 6: every set of siblings by sent date, the deepest
    first (a dummy's key is its first child's), then the roots."""
    order: List[Node] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.kids)
    for node in reversed(order):
        if len(node.kids) > 1:
            node.kids.sort(key=_key)
    roots.sort(key=_key)


# -- REFERENCES step 5 -----------------------------------------------------------------

def _thread_subject(node: Node) -> Tuple[str, bool]:
    first = node if node.msg is not None else min(node.kids, key=_key)
    return first.msg.subject, first.msg.reply


def merge_subjects(roots: List[Node]) -> List[Node]:
    """§3 REFERENCES step 5: threads under the root with one base subject
    merged (the roots sorted by step 4 first)."""
    table: Dict[str, Node] = {}
    subjects = [_thread_subject(node) for node in roots]
    for node, (subject, reply) in zip(roots, subjects):        # (5.B)
        if not subject:
            continue
        held = table.get(subject)
        if held is None:
            table[subject] = node
        elif held.msg is not None and (node.msg is None or (held.msg.reply and not reply)):
            table[subject] = node
    out: List[Node] = []
    gone = set()
    for node, (subject, reply) in zip(roots, subjects):        # (5.C)
        if id(node) in gone:
            continue                        # merged under a new dummy already
        held = table.get(subject) if subject else None
        if held is None or held is node:
            out.append(node)
            continue
        gone.add(id(node))
        if node.msg is None and held.msg is None:
            for kid in node.kids:
                kid.parent = held
            held.kids.extend(node.kids)
        elif held.msg is None or (reply and not held.msg.reply):
            node.parent = held
            held.kids.append(node)
        else:
            dummy = Node()
            for kid in (held, node):
                kid.parent = dummy
                dummy.kids.append(kid)
            gone.add(id(held))
            table[subject] = dummy
            out.append(dummy)
    return [node for node in out if id(node) not in gone]


# -- the algorithms -----------------------------------------------------------------------

def references(msgs: Sequence[Msg]) -> List[Node]:
    """§3 REFERENCES, steps 1 to 6."""
    roots = gather_roots(link_all(msgs))
    roots.sort(key=lambda n: _key(n) if n.msg is not None else min(map(_key, n.kids)))   # (4)
    roots = merge_subjects(roots)
    _sort_all(roots)
    return roots


def refs(msgs: Sequence[Msg]) -> List[Node]:
    """Dovecot's REFS: REFERENCES without step 5, the threads ordered by the
    newest sent date in each (then by sequence order of that message)."""
    roots = gather_roots(link_all(msgs))
    _sort_all(roots)
    newest = {}
    for root in roots:
        best = None
        stack = [root]
        while stack:
            node = stack.pop()
            stack.extend(node.kids)
            if node.msg is not None:
                key = (node.msg.date, node.msg.order)
                best = key if best is None or key > best else best
        newest[id(root)] = best
    roots.sort(key=lambda n: newest[id(n)])
    return roots


ALGORITHMS = {"ORDEREDSUBJECT": ordered_subject, "REFERENCES": references, "REFS": refs}


# -- the response ----------------------------------------------------------------------

def render(roots: Sequence[Node]) -> bytes:
    """thread-data (RFC 5256 §5): ``* THREAD`` and a thread-list per root;
    a chain of only children is one list of numbers, a node with several
    children ends its list with theirs (thread-nested = 2*thread-list)."""
    out = [b"* THREAD"]
    if roots:
        out.append(b" ")
    for root in roots:
        if root.kids:
            _render_tree(root, out)
        else:                               # most threads: one message
            out.append(b"(%d)" % root.msg.number)
    out.append(b"\r\n")
    return b"".join(out)


def _render_tree(root: Node, out: List[bytes]) -> None:
    """The thread-list of ``root`` (a message with children, or a dummy), iteratively."""
    stack: List[Optional[Node]] = [root]          # None: a list to close
    append = out.append
    while stack:
        node = stack.pop()
        if node is None:
            append(b")")
            continue
        if node.msg is None:
            append(b"(")
        else:
            nums = [node.msg.number]
            while len(node.kids) == 1:
                node = node.kids[0]
                nums.append(node.msg.number)
            if not node.kids:
                append(b"(%s)" % b" ".join(b"%d" % n for n in nums))
                continue
            append(b"(%s " % b" ".join(b"%d" % n for n in nums))
        kids = node.kids
        if all(not k.kids for k in kids):          # the usual end: leaves
            append(b"".join(b"(%d)" % k.msg.number for k in kids) + b")")
            continue
        stack.append(None)
        stack.extend(reversed(kids))
