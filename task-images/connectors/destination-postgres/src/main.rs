sluice_connector_kit::connector_main!(sluice_destination_postgres::main);
