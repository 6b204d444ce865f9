from callback_sink.sink.signature import sign, verify


def test_the_worked_example_of_the_protocol_signs_as_documented() -> None:
    assert (
        sign("XXXX#XXXX_976459883882744164", "s3cr3t", 1644914583273)
        == "9f3179fed717704ba63af084c6318026"
    )


def test_a_signature_from_any_configured_secret_is_accepted() -> None:
    security = sign("id", "second", 5)
    assert verify("id", 5, security, ["first", "second"])
    assert verify("id", 5, security.upper(), ["second"])


def test_a_signature_from_an_unknown_secret_or_other_fields_is_refused() -> None:
    security = sign("id", "secret", 5)
    assert not verify("id", 5, security, ["other"])
    assert not verify("id", 6, security, ["secret"])
    assert not verify("id2", 5, security, ["secret"])
    assert not verify("id", 5, security, [])
