"""protocols/backend/serial.py: a session's store steps run one after another, in order."""

import unittest

from protocols.backend.serial import SerialJobs


class StepLoop:
    """The loop as SerialJobs uses it; worker jobs run when the test says."""

    def __init__(self):
        self.jobs = []

    def run_in_thread(self, fn, callback):
        self.jobs.append((fn, callback))

    def step(self):
        fn, callback = self.jobs.pop(0)
        try:
            result = fn()
        except Exception as exc:
            result = exc
        callback(result)


class SerialJobsTest(unittest.TestCase):
    def test_one_job_at_a_time_answered_in_order(self):
        loop, got = StepLoop(), []
        jobs = SerialJobs(loop)
        for n in range(3):
            jobs.submit(lambda n=n: n * 10, got.append)
        self.assertEqual(len(loop.jobs), 1, "the second waits for the first's answer")
        loop.step()
        loop.step()
        self.assertEqual(got, [0, 10])
        self.assertEqual(len(loop.jobs), 1)
        loop.step()
        self.assertEqual((got, loop.jobs), ([0, 10, 20], []))

    def test_an_exception_is_the_answer_and_the_next_job_still_runs(self):
        loop, got = StepLoop(), []
        jobs = SerialJobs(loop)
        jobs.submit(lambda: 1 / 0, got.append)
        jobs.submit(lambda: "after", got.append)
        loop.step()
        loop.step()
        self.assertIsInstance(got[0], ZeroDivisionError)
        self.assertEqual(got[1], "after")

    def test_prepare_wraps_each_job_when_it_starts(self):
        loop, got, started = StepLoop(), [], []

        def prepare(fn):
            started.append(len(loop.jobs))
            return lambda: ("wrapped", fn())
        jobs = SerialJobs(loop, prepare)
        jobs.submit(lambda: 1, got.append)
        jobs.submit(lambda: 2, got.append)
        self.assertEqual(started, [0])            # the second is not prepared until it starts
        loop.step()
        loop.step()
        self.assertEqual((got, started), ([("wrapped", 1), ("wrapped", 2)], [0, 0]))


if __name__ == "__main__":
    unittest.main()
