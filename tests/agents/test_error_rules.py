"""The classification rules, case by case: ``diagnose(Signals(...))`` gives the class, the rule,
the root-cause sentence with its facts, the ranked suggestions and the pattern. Pure functions:
no database, no agents."""

from __future__ import annotations

import signal

import pytest

from agents.errors.rules import RECOVERIES, RULES, Signals, diagnose, raised_memory

SIGKILL, SIGTERM, SIGSEGV = int(signal.SIGKILL), int(signal.SIGTERM), int(signal.SIGSEGV)


def signals(**fields) -> Signals:
    return Signals(**{"agent": "WowCache", "source": "crash", **fields})


def actions(diagnosis) -> list[str]:
    """The suggestions in rank order: a one-click action's key, or the label of a manual step."""
    return [s.action or f"manual:{s.label}" for s in diagnosis.suggestions]


def one_click(diagnosis) -> list[str]:
    return [s.action for s in diagnosis.suggestions if s.action]


# --- the table -----------------------------------------------------------------------------------


def test_rule_names_are_unique_and_the_last_rule_matches_everything() -> None:
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))
    assert RULES[-1].name == "unknown"
    assert RULES[-1].matches(Signals(agent="X", source="whatever"))


def test_every_one_click_suggestion_names_a_known_recovery_with_its_button_words() -> None:
    cases = [
        signals(reason="engine_unreachable", runtime="docker"),
        signals(reason="port_in_use", port=20001),
        signals(oom=True, memory_mb=128, memory_ceiling_mb=4096, has_previous_config=True),
        signals(reason="bad_config", has_previous_config=True),
        signals(dependencies_down=(("WowEvent", "STOPPED"),)),
        signals(drift=("container missing",), source="runtime"),
    ]
    for case in cases:
        for suggestion in diagnose(case).suggestions:
            if suggestion.action:
                assert suggestion.action in RECOVERIES
                assert suggestion.label == RECOVERIES[suggestion.action]


# --- engine and image ----------------------------------------------------------------------------


def test_an_unreachable_engine_is_transient_and_says_which_engine() -> None:
    diagnosis = diagnose(
        signals(
            source="runtime",
            reason="engine_unreachable",
            runtime="docker",
            message="Cannot connect to unix:///var/run/docker.sock",
        )
    )
    assert (diagnosis.rule, diagnosis.classification) == ("engine_unreachable", "transient")
    assert diagnosis.root_cause == (
        "The docker engine did not answer, so nothing could be done to WowCache: "
        "Cannot connect to unix:///var/run/docker.sock"
    )
    assert actions(diagnosis) == ["restart", "manual:Check the engine"]
    assert "docker info" in diagnosis.suggestions[1].text
    assert diagnosis.pattern == "docker engine unreachable"
    assert diagnosis.signature == "engine_unreachable:docker engine unreachable"


def test_a_missing_image_is_configuration_and_gives_the_build_command_for_the_version() -> None:
    diagnosis = diagnose(
        signals(source="runtime", reason="image_missing", runtime="docker", version="9.9.9")
    )
    assert (diagnosis.rule, diagnosis.classification) == ("image_missing", "configuration")
    assert diagnosis.root_cause == "The image for WowCache version 9.9.9 is not on the engine."
    assert actions(diagnosis) == ["manual:Build the image"]
    assert "agents build-image --version 9.9.9" in diagnosis.suggestions[0].text
    assert diagnosis.pattern == "agent image missing"


# --- ports ---------------------------------------------------------------------------------------


def test_a_port_in_use_on_the_local_runtime_names_port_and_holder_and_offers_a_new_port_first() -> (
    None
):
    diagnosis = diagnose(
        signals(
            source="action",
            action="start",
            reason="port_in_use",
            port=20123,
            holder="python3 (pid 4242)",
            runtime="local",
        )
    )
    assert (diagnosis.rule, diagnosis.classification) == ("port_in_use", "resource")
    assert diagnosis.root_cause == (
        "Port 20123 is held by python3 (pid 4242), so WowCache cannot listen on it."
    )
    assert actions(diagnosis) == ["pick_new_port", "manual:Free the port", "restart"]
    free = diagnosis.suggestions[1].text
    assert "python3 (pid 4242)" in free and "sport = :20123" in free
    assert diagnosis.pattern == "port 20123 in use"
    assert diagnosis.signature == "port_in_use:port 20123 in use"


def test_a_port_in_use_with_no_known_holder_says_another_program() -> None:
    diagnosis = diagnose(signals(source="action", reason="port_in_use", port=20124))
    assert diagnosis.root_cause == (
        "Port 20124 is held by another program, so WowCache cannot listen on it."
    )
    assert "whatever holds the port" in diagnosis.suggestions[1].text


@pytest.mark.parametrize("runtime", ["docker", "kubernetes"])
def test_pick_new_port_is_offered_only_on_the_local_runtime(runtime) -> None:
    diagnosis = diagnose(
        signals(source="action", reason="port_in_use", port=8080, holder="nginx", runtime=runtime)
    )
    assert diagnosis.classification == "resource"
    assert actions(diagnosis) == ["manual:Free the port", "restart"]


# --- memory --------------------------------------------------------------------------------------


def test_out_of_memory_is_resource_names_the_limit_and_offers_the_raise_within_the_ceiling() -> (
    None
):
    diagnosis = diagnose(signals(oom=True, memory_mb=128, memory_ceiling_mb=4096))
    assert (diagnosis.rule, diagnosis.classification) == ("out_of_memory", "resource")
    assert "more memory than its 128 MiB limit" in diagnosis.root_cause
    assert "would only repeat that" in diagnosis.root_cause
    assert actions(diagnosis) == ["raise_memory", "manual:Look for a leak"]
    assert diagnosis.suggestions[0].text.startswith("Raise its limit to 256 MiB")
    assert "the ceiling is 4096 MiB" in diagnosis.suggestions[0].text
    assert diagnosis.pattern == "out of memory"


def test_out_of_memory_reported_as_a_start_failure_reason_is_the_same_rule() -> None:
    diagnosis = diagnose(
        signals(source="action", action="start", reason="oom", memory_mb=512, memory_ceiling_mb=700)
    )
    assert diagnosis.rule == "out_of_memory"
    assert diagnosis.suggestions[0].text.startswith("Raise its limit to 700 MiB")  # capped


def test_out_of_memory_after_a_config_change_offers_the_roll_back_after_the_raise() -> None:
    diagnosis = diagnose(
        signals(oom=True, memory_mb=256, memory_ceiling_mb=4096, has_previous_config=True)
    )
    assert actions(diagnosis) == ["raise_memory", "rollback_config", "manual:Look for a leak"]


def test_raise_memory_is_not_offered_at_the_ceiling() -> None:
    diagnosis = diagnose(signals(oom=True, memory_mb=4096, memory_ceiling_mb=4096))
    assert diagnosis.classification == "resource"
    assert "raise_memory" not in one_click(diagnosis)
    assert actions(diagnosis) == ["manual:Look for a leak"]


def test_raised_memory_doubles_adds_at_least_128_and_stops_at_the_ceiling() -> None:
    assert raised_memory(64, 4096) == 192  # +128 beats doubling
    assert raised_memory(128, 4096) == 256
    assert raised_memory(1024, 4096) == 2048
    assert raised_memory(3000, 4096) == 4096
    assert raised_memory(4096, 4096) == 4096


def test_oom_beats_sigkill() -> None:
    diagnosis = diagnose(signals(oom=True, signal=SIGKILL, exit_code=137, memory_mb=128))
    assert (diagnosis.rule, diagnosis.classification) == ("out_of_memory", "resource")


def test_oom_beats_a_dependency_that_is_down() -> None:
    diagnosis = diagnose(
        signals(oom=True, memory_mb=128, dependencies_down=(("WowEvent", "STOPPED"),))
    )
    assert diagnosis.rule == "out_of_memory"


# --- configuration -------------------------------------------------------------------------------


def test_a_refused_configuration_is_configuration_and_says_when_the_config_changed() -> None:
    diagnosis = diagnose(
        signals(
            source="action",
            action="restart",
            reason="bad_config",
            exit_code=2,
            message="task_max_failures must be an integer from 1 to 1000, got -1",
            config_changed_minutes_ago=4.2,
            has_previous_config=True,
        )
    )
    assert (diagnosis.rule, diagnosis.classification) == ("bad_config", "configuration")
    assert diagnosis.root_cause == (
        "WowCache refused its configuration: task_max_failures must be an integer from 1 to "
        "1000, got -1 Its config was changed 4 minutes ago."
    )
    assert actions(diagnosis) == ["rollback_config", "manual:Correct the config"]
    assert diagnosis.pattern == "configuration refused"


def test_a_config_changed_seconds_ago_reads_less_than_a_minute() -> None:
    diagnosis = diagnose(
        signals(reason="bad_config", message="bad", config_changed_minutes_ago=0.2)
    )
    assert diagnosis.root_cause.endswith("Its config was changed less than a minute ago.")


def test_a_config_changed_a_minute_ago_reads_in_the_singular() -> None:
    diagnosis = diagnose(
        signals(reason="bad_config", message="bad", config_changed_minutes_ago=1.2)
    )
    assert diagnosis.root_cause.endswith("Its config was changed 1 minute ago.")


def test_a_config_changed_minutes_ago_rounds_to_whole_minutes() -> None:
    diagnosis = diagnose(
        signals(reason="bad_config", message="bad", config_changed_minutes_ago=2.6)
    )
    assert diagnosis.root_cause.endswith("Its config was changed 3 minutes ago.")


def test_a_runtime_message_that_already_says_refused_is_not_repeated() -> None:
    diagnosis = diagnose(
        signals(
            source="action",
            reason="bad_config",
            message="WowCache refused its configuration (task_max_failures must be an integer "
            "from 1 to 1000, got -1)",
        )
    )
    assert diagnosis.root_cause == (
        "WowCache refused its configuration (task_max_failures must be an integer from 1 to "
        "1000, got -1)"
    )


def test_a_config_change_more_than_an_hour_ago_is_not_mentioned() -> None:
    diagnosis = diagnose(signals(reason="bad_config", message="bad", config_changed_minutes_ago=61))
    assert diagnosis.root_cause == "WowCache refused its configuration: bad"


def test_exit_code_2_is_agentd_refusing_its_config_even_without_a_reason() -> None:
    diagnosis = diagnose(signals(exit_code=2, message="process exited with code 2"))
    assert (diagnosis.rule, diagnosis.classification) == ("bad_config", "configuration")
    assert actions(diagnosis) == ["manual:Correct the config"]  # nothing to roll back to


def test_a_bad_config_exit_while_a_dependency_is_down_is_configuration() -> None:
    diagnosis = diagnose(
        signals(
            exit_code=2,
            message="bad configuration",
            dependencies_down=(("WowCache", "ERRORED"),),
            agent="WowMemory",
        )
    )
    assert (diagnosis.rule, diagnosis.classification) == ("bad_config", "configuration")


def test_not_ready_after_a_config_change_is_configuration_with_the_readiness_answer() -> None:
    diagnosis = diagnose(
        signals(
            source="action",
            action="restart",
            reason="not_ready",
            readiness="injected fault: refuse_readiness",
            config_changed_minutes_ago=0.5,
            has_previous_config=True,
        )
    )
    assert (diagnosis.rule, diagnosis.classification) == (
        "not_ready_after_config_change",
        "configuration",
    )
    assert diagnosis.root_cause == (
        "WowCache does not become ready since its config changed: injected fault: "
        "refuse_readiness. Its config was changed less than a minute ago."
    )
    assert actions(diagnosis) == ["rollback_config", "restart", "manual:Read the log lines"]
    assert diagnosis.pattern == "not ready after a config change"


def test_not_ready_after_a_config_change_beats_a_dependency_that_is_down() -> None:
    diagnosis = diagnose(
        signals(
            source="health",
            readiness="not ready",
            config_changed_minutes_ago=2,
            dependencies_down=(("WowEvent", "STOPPED"),),
        )
    )
    assert diagnosis.rule == "not_ready_after_config_change"


def test_not_ready_without_a_config_change_is_transient() -> None:
    diagnosis = diagnose(
        signals(
            source="action",
            reason="not_ready",
            readiness="redis: connection refused",
            config_changed_minutes_ago=None,
        )
    )
    assert (diagnosis.rule, diagnosis.classification) == ("not_ready", "transient")
    assert diagnosis.root_cause == (
        "WowCache is alive but not ready for work: redis: connection refused."
    )
    assert actions(diagnosis) == ["restart", "manual:Read the log lines"]
    assert diagnosis.pattern == "not ready"


def test_not_ready_with_a_config_change_long_ago_is_transient() -> None:
    diagnosis = diagnose(
        signals(source="action", reason="not_ready", config_changed_minutes_ago=90)
    )
    assert diagnosis.rule == "not_ready"
    assert diagnosis.root_cause == "WowCache is alive but not ready for work."


# --- dependencies --------------------------------------------------------------------------------


def test_a_dependency_down_is_dependency_and_names_it_with_its_state() -> None:
    diagnosis = diagnose(
        signals(agent="WowMemory", signal=SIGKILL, dependencies_down=(("WowCache", "ERRORED"),))
    )
    assert (diagnosis.rule, diagnosis.classification) == ("dependency_down", "dependency")
    assert diagnosis.root_cause == "WowMemory depends on WowCache (ERRORED), which is not running."
    assert actions(diagnosis) == ["start_dependencies", "restart_with_dependencies"]
    assert "Bring WowCache (ERRORED) up, then WowMemory" in diagnosis.suggestions[0].text
    assert diagnosis.pattern == "dependency down: WowCache"


def test_several_dependencies_down_are_listed_with_and() -> None:
    diagnosis = diagnose(
        signals(
            agent="WowVision Prime",
            exit_code=1,
            dependencies_down=(
                ("WowEvent", "STOPPED"),
                ("WowMemory", "ERRORED"),
                ("WowAnalytics", "DEPLOYED"),
            ),
        )
    )
    assert diagnosis.root_cause == (
        "WowVision Prime depends on WowEvent (STOPPED), WowMemory (ERRORED) and "
        "WowAnalytics (DEPLOYED), which are not running."
    )
    assert diagnosis.pattern == "dependency down: WowEvent, WowMemory, WowAnalytics"


def test_sigkill_while_a_dependency_is_down_is_dependency() -> None:
    diagnosis = diagnose(
        signals(signal=SIGKILL, exit_code=137, dependencies_down=(("WowEvent", "STOPPED"),))
    )
    assert diagnosis.classification == "dependency"


def test_a_crash_loop_while_a_dependency_is_down_is_dependency() -> None:
    diagnosis = diagnose(
        signals(exit_code=1, recent_crashes=9, dependencies_down=(("WowEvent", "STOPPED"),))
    )
    assert diagnosis.rule == "dependency_down"


# --- crashes -------------------------------------------------------------------------------------


def test_sigkill_from_outside_is_transient_and_offers_a_restart() -> None:
    diagnosis = diagnose(signals(signal=SIGKILL, recent_crashes=1))
    assert (diagnosis.rule, diagnosis.classification) == ("killed", "transient")
    assert diagnosis.root_cause.startswith("WowCache was killed by SIGKILL (exit code 137)")
    assert "outside the portal" in diagnosis.root_cause
    assert actions(diagnosis) == ["restart"]
    assert diagnosis.pattern == "killed by SIGKILL"


def test_sigterm_from_outside_is_killed_too() -> None:
    diagnosis = diagnose(signals(signal=SIGTERM))
    assert diagnosis.rule == "killed"
    assert "killed by SIGTERM (exit code 143)" in diagnosis.root_cause


def test_a_crash_loop_at_the_threshold_is_permanent_with_the_count_and_exit() -> None:
    diagnosis = diagnose(signals(exit_code=7, recent_crashes=6, crash_loop_after=6))
    assert (diagnosis.rule, diagnosis.classification) == ("crash_loop", "permanent")
    assert diagnosis.root_cause == (
        "WowCache crashed 6 times in 10 minutes (exit code 7); restarting it again will not "
        "help until the cause is fixed."
    )
    assert actions(diagnosis) == ["manual:Read the log lines", "restart"]
    assert diagnosis.pattern == "crash loop (exit code 7)"


def test_a_crash_loop_offers_the_roll_back_first_when_the_config_changed() -> None:
    diagnosis = diagnose(
        signals(exit_code=7, recent_crashes=4, crash_loop_after=3, has_previous_config=True)
    )
    assert actions(diagnosis)[0] == "rollback_config"


def test_sigkill_beyond_the_crash_loop_threshold_is_permanent() -> None:
    diagnosis = diagnose(signals(signal=SIGKILL, recent_crashes=7, crash_loop_after=6))
    assert (diagnosis.rule, diagnosis.classification) == ("crash_loop", "permanent")
    assert "(killed by SIGKILL (exit code 137))" in diagnosis.root_cause


def test_one_crash_below_the_threshold_is_not_a_loop() -> None:
    diagnosis = diagnose(signals(exit_code=7, recent_crashes=5, crash_loop_after=6))
    assert (diagnosis.rule, diagnosis.classification) == ("exited", "transient")


def test_crashes_counted_by_a_failed_action_do_not_make_a_loop() -> None:
    # Only the monitor's crashes (source crash) count towards a loop.
    diagnosis = diagnose(
        signals(source="action", exit_code=7, recent_crashes=10, crash_loop_after=3)
    )
    assert diagnosis.rule == "exited"


def test_a_process_that_ended_on_its_own_is_transient_with_its_exit_code() -> None:
    diagnosis = diagnose(signals(exit_code=7, recent_crashes=1))
    assert (diagnosis.rule, diagnosis.classification) == ("exited", "transient")
    assert diagnosis.root_cause == "WowCache's process ended on its own (exit code 7)."
    assert actions(diagnosis) == ["restart", "manual:Read the log lines"]
    assert diagnosis.pattern == "exited (exit code 7)"


def test_another_signal_is_an_exit_named_by_the_signal() -> None:
    diagnosis = diagnose(signals(signal=SIGSEGV))
    assert diagnosis.rule == "exited"
    assert "killed by SIGSEGV (exit code 139)" in diagnosis.root_cause
    assert diagnosis.pattern == "exited (killed by SIGSEGV (exit code 139))"


def test_a_crash_with_no_exit_known_says_so() -> None:
    diagnosis = diagnose(signals(reason="missing"))
    assert diagnosis.rule == "exited"
    assert diagnosis.root_cause == "WowCache's process ended on its own (no exit code)."


def test_ending_while_starting_is_transient_and_offers_restart_then_log_then_roll_back() -> None:
    diagnosis = diagnose(
        signals(
            source="action",
            action="start",
            reason="crashed_on_start",
            exit_code=1,
            message="WowCache exited with code 1 before it was ready",
            has_previous_config=True,
        )
    )
    assert (diagnosis.rule, diagnosis.classification) == ("crashed_on_start", "transient")
    assert diagnosis.root_cause == (
        "WowCache ended while starting (exit code 1): WowCache exited with code 1 before it was ready"
    )
    assert actions(diagnosis) == ["restart", "manual:Read the log lines", "rollback_config"]
    assert diagnosis.pattern == "ended while starting (exit code 1)"


def test_ending_while_starting_killed_by_a_signal_is_still_crashed_on_start() -> None:
    # A signal other than SIGKILL/SIGTERM: the start rule, not "killed".
    diagnosis = diagnose(signals(source="action", reason="crashed_on_start", signal=SIGSEGV))
    assert diagnosis.rule == "crashed_on_start"
    assert "killed by SIGSEGV" in diagnosis.root_cause


# --- drift, health, the fallback -----------------------------------------------------------------


def test_drift_is_configuration_and_offers_reconcile() -> None:
    diagnosis = diagnose(
        signals(
            source="runtime",
            drift=("container waooaw-wow-cache-0 is missing", "image differs"),
        )
    )
    assert (diagnosis.rule, diagnosis.classification) == ("drift", "configuration")
    assert diagnosis.root_cause == (
        "The runtime no longer matches the portal for WowCache: container waooaw-wow-cache-0 is "
        "missing; image differs"
    )
    assert actions(diagnosis) == ["reconcile"]
    assert diagnosis.pattern == "drift"


def test_failing_health_checks_are_transient_with_the_probe_message() -> None:
    diagnosis = diagnose(signals(source="health", message="replica 0 not answering /healthz"))
    assert (diagnosis.rule, diagnosis.classification) == ("unhealthy", "transient")
    assert diagnosis.root_cause == (
        "WowCache fails its health checks: replica 0 not answering /healthz."
    )
    assert actions(diagnosis) == ["restart", "manual:Read the log lines"]
    assert diagnosis.pattern == "failing health checks"


def test_a_health_check_with_no_message_says_no_answer() -> None:
    diagnosis = diagnose(signals(source="health"))
    assert diagnosis.root_cause == "WowCache fails its health checks: no answer."


def test_a_degraded_health_check_that_says_not_ready_is_the_readiness_rule() -> None:
    # agents.errors passes the probe's "not ready" as the readiness answer.
    diagnosis = diagnose(signals(source="health", readiness="replica 0 not ready"))
    assert (diagnosis.rule, diagnosis.classification) == ("not_ready", "transient")


def test_an_unrecognised_failure_falls_back_to_unknown_with_its_message() -> None:
    diagnosis = diagnose(
        signals(source="action", action="provision", reason="quota", message="Disk quota exceeded")
    )
    assert (diagnosis.rule, diagnosis.classification) == ("unknown", "transient")
    assert diagnosis.root_cause == "Disk quota exceeded"
    assert actions(diagnosis) == ["restart", "manual:Read the log lines"]
    assert diagnosis.pattern == "quota"
    assert diagnosis.signature == "unknown:quota"


def test_the_fallback_without_a_message_or_reason_says_it_does_not_recognise_it() -> None:
    diagnosis = diagnose(Signals(agent="WowCache", source="runtime"))
    assert diagnosis.rule == "unknown"
    assert diagnosis.root_cause == ("WowCache failed for a reason the portal does not recognise.")
    assert diagnosis.pattern == "runtime"


def test_the_signature_is_the_rule_and_pattern_and_fits_its_column() -> None:
    diagnosis = diagnose(
        signals(dependencies_down=tuple((f"Agent{n:03d}" + "x" * 20, "STOPPED") for n in range(20)))
    )
    assert diagnosis.signature.startswith("dependency_down:dependency down: Agent000")
    assert len(diagnosis.signature) == 200


def test_suggestions_serialise_for_the_database() -> None:
    diagnosis = diagnose(signals(reason="port_in_use", port=20001))
    assert diagnosis.suggestions[0].as_dict() == {
        "label": "Pick another port and start",
        "text": "Give the agent a free port and start it there.",
        "action": "pick_new_port",
        "href": "",
    }
    assert diagnosis.suggestions[1].as_dict()["action"] == ""


def test_tasks_that_keep_failing_are_permanent_and_point_at_the_dead_letters() -> None:
    diagnosis = diagnose(
        signals(
            source="tasks", reason="task_failures", dead_lettered=3, queue="agents:wow-cache:dlq",
            last_task_error="timeout talking to the CRM",
        )
    )  # fmt: skip
    assert (diagnosis.rule, diagnosis.classification) == ("task_failures", "permanent")
    assert diagnosis.root_cause == (
        "WowCache's tasks keep failing: 3 were given up on after every retry and moved to "
        "agents:wow-cache:dlq (last error: timeout talking to the CRM)."
    )
    assert one_click(diagnosis) == ["restart"]
    assert "grouped by error" in diagnosis.suggestions[0].text
    grouped = diagnose(
        signals(
            source="tasks", reason="task_failures", dead_lettered=3, queue="agents:wow-cache:dlq",
            agent_slug="wow-cache", dead_letter_group="4cbff9584f25",
        )
    )  # fmt: skip
    # The dead-letter panel of that group, as observability registers the link.
    assert grouped.suggestions[0].href == (
        "/queues/agents:wow-cache:tasks/?group=4cbff9584f25#dead-letters"
    )
    changed = diagnose(
        signals(
            source="tasks", reason="task_failures", dead_lettered=1, queue="q",
            config_changed_minutes_ago=5, has_previous_config=True,
        )
    )  # fmt: skip
    assert one_click(changed) == ["rollback_config", "restart"]
    assert changed.root_cause.endswith("Its config was changed 5 minutes ago.")
