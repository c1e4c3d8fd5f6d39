from sensor.community_id import community_id


def test_community_id_matches_the_spec_baseline():
    # Baseline from the community-id spec's test vectors (tcp, seed 0).
    assert community_id("128.232.110.120", 34855, "66.35.250.204", 80) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    # Direction does not matter.
    assert community_id("66.35.250.204", 80, "128.232.110.120", 34855) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
