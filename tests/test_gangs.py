"""GangPolicy on its own: what it starts, how a rendezvous completes, how a gang fails.
(The driver's use of it, with real workers, is in test_dist.py.)"""

from maggy_magic.distributed.gangs import Failure, GangPolicy
from maggy_magic.trial import Trial


def gang(name="g0", size=3):
    trials = []
    for rank in range(size):
        trial = Trial({"lr": 0.1}, info_dict={"gang": name, "rank": rank})
        trial.trial_id = f"{name}-{rank}"
        trials.append(trial)
    return trials


def taker(trials):
    pending = list(trials)
    return lambda: pending.pop(0) if pending else None


def test_a_gang_starts_only_whole():
    policy = GangPolicy(3, rendezvous_timeout=5.0)
    members = gang()
    assert policy.next_gang(2, taker(members)) == ([], [])          # too few workers
    assert policy.next_gang(3, taker(members[:2])) == ([], members[:2])  # too few trials
    assert policy.next_gang(4, taker(members)) == (members, [])


def test_rendezvous_values_arrive_in_rank_order_once_all_sent():
    policy = GangPolicy(3, rendezvous_timeout=5.0)
    members = gang()
    policy.started(members)
    assert policy.meet(members[2], "port", "c", now=0.0) is None
    assert policy.meet(members[0], "port", "a", now=0.1) is None
    assert policy.meet(members[1], "port", "b", now=0.2) == ["a", "b", "c"]
    assert not policy.has_deadlines


def test_a_missed_rendezvous_fails_the_first_missing_rank_after_the_timeout():
    policy = GangPolicy(3, rendezvous_timeout=5.0)
    members = gang()
    policy.started(members)
    policy.meet(members[0], "port", "a", now=0.0)
    assert policy.due(now=4.9) == []
    [failure] = policy.due(now=5.0)
    assert failure.trial is members[1] and failure.error_type == "RendezvousError"
    assert "'port'" in failure.error


def test_an_error_waits_for_a_peers_news_then_names_its_rank():
    policy = GangPolicy(3, rendezvous_timeout=5.0, settle=0.5)
    members = gang()
    policy.started(members)
    error = Failure(members[1], "collective broke", "RuntimeError", "tb")
    assert policy.member_error(error, now=10.0) == 10.5
    assert policy.waiting
    assert policy.member_error(Failure(members[2], "x", "E", None), now=10.1) is None
    assert policy.due(now=10.4) == []
    assert policy.due(now=10.5) == [error]


def test_a_dead_peer_takes_the_blame_and_the_waiting_error_keeps_its_own():
    policy = GangPolicy(3, rendezvous_timeout=5.0, settle=0.5)
    members = gang()
    policy.started(members)
    policy.meet(members[1], "port", "b", now=0.0)
    policy.member_error(Failure(members[1], "collective broke", "RuntimeError", "tb"), 1.0)
    verdict = policy.failure(Failure(members[0], "its worker w0 was lost", "WorkerLost", None))
    assert verdict.message == "rank 0 failed: its worker w0 was lost"
    assert verdict.members == members
    assert [(o.trial, o.error, o.error_type) for o in verdict.outcomes] == [
        (members[0], "rank 0 failed: its worker w0 was lost", "WorkerLost"),
        (members[1], "collective broke (after rank 0 failed)", "RuntimeError"),
        (members[2], "aborted because rank 0 failed", "GangAborted")]
    assert not policy.waiting and not policy.has_deadlines  # forgotten with the gang


def test_members_that_already_ended_keep_their_end():
    policy = GangPolicy(2, rendezvous_timeout=5.0)
    members = gang(size=2)
    policy.started(members)
    members[1].status = Trial.FINISHED
    verdict = policy.failure(Failure(members[0], "boom", "ValueError", None))
    assert [o.trial for o in verdict.outcomes] == [members[0]]
