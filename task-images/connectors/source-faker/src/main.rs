sluice_connector_kit::connector_main!(sluice_source_faker::main);
