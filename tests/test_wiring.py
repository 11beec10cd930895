"""protocols/backend/wiring.py composes the services; it does not re-export them.

issue 9 §3: each piece of state has one owner, reached on that owner
(``backend.outbound.relay``, ``backend.delivery.pickup``, ``backend.auth.lane``);
a property on ``Backend`` that only returns a service's attribute is a second
name for it, so there is none.
"""

import ast
import os
import unittest

from tests.helpers import ROOT


def forwarding_properties(source: str, class_name: str):
    """Names of ``@property`` methods of ``class_name`` whose body is only
    ``return self.<service>.<attribute>``."""
    tree = ast.parse(source)
    out = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name):
        for fn in cls.body:
            if not isinstance(fn, ast.FunctionDef):
                continue
            if not any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list):
                continue
            body = [s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
            if len(body) == 1 and isinstance(body[0], ast.Return):
                value = body[0].value
                if (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Attribute)
                        and isinstance(value.value.value, ast.Name) and value.value.value.id == "self"):
                    out.append(fn.name)
    return out


class WiringTest(unittest.TestCase):
    def test_backend_has_no_property_that_only_forwards_to_a_service(self):
        with open(os.path.join(ROOT, "protocols", "backend", "wiring.py"), encoding="utf-8") as f:
            self.assertEqual(forwarding_properties(f.read(), "Backend"), [])

    def test_the_check_sees_a_forwarding_property(self):
        source = ("class Backend:\n    @property\n    def relay(self):\n        return self.outbound.relay\n"
                  "    @property\n    def busy(self):\n        return self.count > 0\n")
        self.assertEqual(forwarding_properties(source, "Backend"), ["relay"])


if __name__ == "__main__":
    unittest.main()
